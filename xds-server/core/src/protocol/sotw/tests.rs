use super::*;
use crate::model::{Locality, LocalityLookup};
use crate::policy::FailoverPolicy;
use crate::protocol::node::NodeError;
use crate::snapshot::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE};
use crate::testing::{envoy, mesh, xds};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use prost::Message;
use std::sync::Arc;

fn snapshot(prev: Option<&Snapshot>, services: &[(&str, &[&str])]) -> Snapshot {
    xds::snapshot(prev, mesh::registry(8080, services))
}

fn node() -> Node {
    xds::node("envoy-1", "")
}

fn request(type_url: &str, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    xds::request(node(), type_url, names, version, nonce)
}

fn ack(resp: &DiscoveryResponse, names: &[&str]) -> DiscoveryRequest {
    xds::ack(node(), resp, names)
}

fn push(conn: &mut AdsConnection, snap: &Snapshot) -> Vec<DiscoveryResponse> {
    conn.on_snapshot(snap)
        .iter()
        .map(SotwResponse::to_proto)
        .collect()
}

fn on_req(
    conn: &mut AdsConnection,
    req: &DiscoveryRequest,
    snap: &Snapshot,
) -> Result<(RequestKind, Vec<DiscoveryResponse>), ProtocolError> {
    let (what, out) = conn.on_request(&req.into(), snap)?;
    Ok((what, out.iter().map(SotwResponse::to_proto).collect()))
}

fn one(
    conn: &mut AdsConnection,
    req: &DiscoveryRequest,
    snap: &Snapshot,
) -> Option<DiscoveryResponse> {
    let (_, mut out) = on_req(conn, req, snap).unwrap();
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
    // ACK that also adds a name: answered with the new one only (SotW lets EDS carry a subset;
    // Envoy keeps the clusters a response does not mention).
    let both = one(&mut conn, &ack(&eds, &[EDS_A, "b.shop:8080"]), &snap).unwrap();
    assert_eq!(cla_names(&both), vec!["b.shop:8080"]);
    assert_ne!(both.version_info, eds.version_info);
    // plain ACK: silence
    assert!(one(&mut conn, &ack(&both, &[EDS_A, "b.shop:8080"]), &snap).is_none());
    // Dropping a name and adding it back sends it again.
    let a_only = one(&mut conn, &ack(&both, &[EDS_A]), &snap);
    assert!(a_only.is_none(), "nothing new to send for a removal");
    let st = conn.type_state(ResourceType::Endpoint).unwrap();
    assert_eq!(
        version_string(st.version),
        eds.version_info,
        "the version follows what the client holds"
    );
}

fn cla_names(resp: &DiscoveryResponse) -> Vec<String> {
    resp.resources
        .iter()
        .map(|a| {
            ClusterLoadAssignment::decode(a.value.as_slice())
                .unwrap()
                .cluster_name
        })
        .collect()
}

#[test]
fn an_endpoint_change_sends_only_the_changed_load_assignment() {
    let first = snapshot(None, &[("a", &["10.0.0.1"]), ("b", &["10.0.0.2"])]);
    let mut conn = AdsConnection::new();
    let names = [EDS_A, "b.shop:8080"];
    let eds = one(&mut conn, &request(ENDPOINT_TYPE, &names, "", ""), &first).unwrap();
    assert_eq!(eds.resources.len(), 2);
    assert!(one(&mut conn, &ack(&eds, &names), &first).is_none());
    push(&mut conn, &first);
    let second = snapshot(Some(&first), &[("a", &["10.0.0.1"]), ("b", &["10.0.0.3"])]);
    let pushed = push(&mut conn, &second);
    assert_eq!(pushed.len(), 1);
    assert_eq!(cla_names(&pushed[0]), vec!["b.shop:8080"]);
    // A snapshot that skips one generation (the client was slow) is checked in full and still
    // sends only what differs from what the client holds.
    let third = snapshot(Some(&second), &[("a", &["10.0.0.4"]), ("b", &["10.0.0.3"])]);
    let fourth = snapshot(Some(&third), &[("a", &["10.0.0.4"]), ("b", &["10.0.0.5"])]);
    let pushed = push(&mut conn, &fourth);
    assert_eq!(cla_names(&pushed[0]), vec![EDS_A, "b.shop:8080"]);
    let fifth = snapshot(Some(&fourth), &[("a", &["10.0.0.4"]), ("b", &["10.0.0.5"])]);
    assert!(push(&mut conn, &fifth).is_empty());
    // A cluster that disappears is dropped from what the client holds; nothing is sent for it
    // (CDS removes the cluster).
    let sixth = snapshot(Some(&fifth), &[("a", &["10.0.0.4"])]);
    assert!(push(&mut conn, &sixth).is_empty());
    let st = conn.type_state(ResourceType::Endpoint).unwrap();
    assert_eq!(st.held.keys().collect::<Vec<_>>(), vec![EDS_A]);
}

#[test]
fn a_refused_load_assignment_is_not_resent_while_others_still_flow() {
    let first = snapshot(None, &[("a", &["10.0.0.1"]), ("b", &["10.0.0.2"])]);
    let mut conn = AdsConnection::new();
    let names = [EDS_A, "b.shop:8080"];
    let eds = one(&mut conn, &request(ENDPOINT_TYPE, &names, "", ""), &first).unwrap();
    one(&mut conn, &ack(&eds, &names), &first);
    push(&mut conn, &first);
    let second = snapshot(Some(&first), &[("a", &["10.0.0.9"]), ("b", &["10.0.0.2"])]);
    let pushed = push(&mut conn, &second);
    let mut nack = ack(&pushed[0], &names);
    nack.version_info = eds.version_info.clone();
    nack.error_detail = Some(xds::error_detail("bad"));
    let (what, out) = on_req(&mut conn, &nack, &second).unwrap();
    assert!(matches!(what, RequestKind::Nack(_)));
    assert!(out.is_empty());
    // b changes: only b goes out; a's refused content stays back.
    let third = snapshot(Some(&second), &[("a", &["10.0.0.9"]), ("b", &["10.0.0.3"])]);
    let pushed = push(&mut conn, &third);
    assert_eq!(cla_names(&pushed[0]), vec!["b.shop:8080"]);
    // Even after an ACK and a full re-check (a skipped generation), the refused content stays back.
    let (_, _) = on_req(&mut conn, &ack(&pushed[0], &names), &third).unwrap();
    let skipped = snapshot(Some(&third), &[("a", &["10.0.0.9"]), ("b", &["10.0.0.3"])]);
    let again = snapshot(
        Some(&skipped),
        &[("a", &["10.0.0.9"]), ("b", &["10.0.0.3"])],
    );
    assert!(push(&mut conn, &again).is_empty());
    // a gets new content: it is sent.
    let fourth = snapshot(Some(&again), &[("a", &["10.0.0.8"]), ("b", &["10.0.0.3"])]);
    let pushed = push(&mut conn, &fourth);
    assert_eq!(cla_names(&pushed[0]), vec![EDS_A]);
}

#[test]
fn stale_nonce_is_ignored() {
    let first = snapshot(None, &[("a", &["10.0.0.1"])]);
    let mut conn = AdsConnection::new();
    let eds1 = one(&mut conn, &request(ENDPOINT_TYPE, &[EDS_A], "", ""), &first).unwrap();
    let second = snapshot(Some(&first), &[("a", &["10.0.0.2"])]);
    let pushed = push(&mut conn, &second);
    assert_eq!(pushed.len(), 1);
    // Envoy's ACK of the first response arrives after we pushed the second: stale, ignored, even
    // though it carries a subscription change.
    let (what, out) = on_req(&mut conn, &ack(&eds1, &[EDS_A, "b.shop:8080"]), &second).unwrap();
    assert_eq!(what, RequestKind::StaleNonce);
    assert!(out.is_empty());
    let (what, _) = on_req(&mut conn, &ack(&pushed[0], &[EDS_A]), &second).unwrap();
    assert_eq!(what, RequestKind::Ack);
}

#[test]
fn nacked_version_is_not_resent_but_a_new_one_is() {
    let first = snapshot(None, &[("a", &["10.0.0.1"])]);
    let mut conn = AdsConnection::new();
    let eds = one(&mut conn, &request(ENDPOINT_TYPE, &[EDS_A], "", ""), &first).unwrap();
    let mut nack = request(ENDPOINT_TYPE, &[EDS_A], "", &eds.nonce);
    nack.error_detail = Some(xds::error_detail(
        "cluster_name: \"a\"\nendpoints {\n}\n\nProto constraint validation failed: bad",
    ));
    let (what, out) = on_req(&mut conn, &nack, &first).unwrap();
    assert!(out.is_empty(), "no answer to a NACK with the same content");
    let RequestKind::Nack(n) = what else {
        panic!("expected NACK")
    };
    assert_eq!(n.version, eds.version_info);
    assert_eq!(n.message, "Proto constraint validation failed: bad");
    // The same content again (e.g. an unrelated snapshot) is not pushed.
    let same = snapshot(Some(&first), &[("a", &["10.0.0.1"]), ("b", &["10.0.0.9"])]);
    assert!(push(&mut conn, &same).is_empty());
    // New content is.
    let fixed = snapshot(Some(&same), &[("a", &["10.0.0.2"])]);
    let pushed = push(&mut conn, &fixed);
    assert_eq!(pushed.len(), 1);
    let (what, _) = on_req(&mut conn, &ack(&pushed[0], &[EDS_A]), &fixed).unwrap();
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
    assert!(push(&mut conn, &same).is_empty());
    let changed = snapshot(Some(&same), &[("a", &["10.0.0.2"])]);
    let pushed = push(&mut conn, &changed);
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
    let policies = mesh::mesh_wide(FailoverPolicy {
        panic_threshold: 5,
        ..FailoverPolicy::default()
    });
    let second = xds::snapshot_with(Some(&first), first.registry.clone(), policies);
    let pushed = push(&mut conn, &second);
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
    let pushed = push(&mut conn, &next);
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
        on_req(&mut conn, &req, &snap).unwrap_err(),
        ProtocolError::Node(NodeError::Missing)
    );
    let req = request("type.googleapis.com/envoy.Unknown", &[], "", "");
    let (what, out) = on_req(&mut conn, &req, &snap).unwrap();
    assert!(matches!(what, RequestKind::UnknownType(_)));
    assert!(out.is_empty());
    // Empty CDS is still a complete answer: Envoy needs it to finish initialising.
    let cds = one(&mut conn, &request(CLUSTER_TYPE, &[], "", ""), &snap).unwrap();
    assert!(cds.resources.is_empty());
}

struct Pods(std::sync::Mutex<Option<Locality>>);
impl LocalityLookup for Pods {
    fn locality_of(&self, pod: &crate::model::PodHint) -> Option<Locality> {
        assert_eq!(pod.name.as_deref(), Some("web-1"));
        assert_eq!(pod.namespace.as_deref(), Some("shop"));
        self.0.lock().unwrap().clone()
    }
}

#[test]
fn client_without_locality_is_located_through_its_pod_even_when_the_pod_shows_up_late() {
    let snap = snapshot(None, &[("a", &["10.0.0.1"])]);
    let pods = Arc::new(Pods(std::sync::Mutex::new(None)));
    let mut conn = AdsConnection::with_lookup(Some(pods.clone()));
    let mut req = request(CLUSTER_TYPE, &[], "", "");
    req.node = Some(Node {
        id: "web-1".into(),
        metadata: Some(xds::metadata(&[
            ("pod_name", "web-1"),
            ("namespace", "shop"),
        ])),
        ..Node::default()
    });
    on_req(&mut conn, &req, &snap).unwrap();
    assert_eq!(conn.client().unwrap().locality, Locality::default());
    *pods.0.lock().unwrap() = Some(Locality::new("r", "z", ""));
    push(&mut conn, &snap);
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

/// The first snapshot after a client's initial requests re-checks only what changed since the
/// snapshot those requests were answered from, not every subscribed resource.
#[test]
fn initial_answers_count_as_synced_so_the_first_change_is_incremental() {
    let first = snapshot(None, &[("a", &["10.0.0.1"]), ("b", &["10.0.0.2"])]);
    let mut conn = AdsConnection::new();
    let names = [EDS_A, "b.shop:8080"];
    one(&mut conn, &request(CLUSTER_TYPE, &[], "", ""), &first).unwrap();
    let eds = one(&mut conn, &request(ENDPOINT_TYPE, &names, "", ""), &first).unwrap();
    let synced = |c: &AdsConnection| c.types.get(&ResourceType::Endpoint).unwrap().synced_at;
    assert_eq!(synced(&conn), Some(first.generation));
    // A plain ACK changes nothing.
    one(&mut conn, &ack(&eds, &names), &first);
    assert_eq!(synced(&conn), Some(first.generation));
    let second = snapshot(Some(&first), &[("a", &["10.0.0.1"]), ("b", &["10.0.0.3"])]);
    let changed = xds::names(&["b.shop:8080"]);
    assert_eq!(
        second.scope(ResourceType::Endpoint, synced(&conn)),
        Scope::Names(&changed)
    );
    let pushed = push(&mut conn, &second);
    assert_eq!(cla_names(&pushed[0]), vec!["b.shop:8080"]);
    assert_eq!(synced(&conn), Some(second.generation));
    // The same snapshot again: nothing to look at.
    assert_eq!(
        second.scope(ResourceType::Endpoint, synced(&conn)),
        Scope::Nothing
    );
}

fn with_identity(mut req: DiscoveryRequest, identity: &str) -> DiscoveryRequest {
    req.node = Some(xds::sidecar(req.node.unwrap(), identity));
    req
}

/// The certificate chains in an SDS response, by secret name.
fn secrets_in(resp: &DiscoveryResponse) -> Vec<(String, String)> {
    resp.resources
        .iter()
        .map(|a| envoy::secret(&a.value))
        .collect()
}

#[test]
fn secrets_are_per_identity_and_a_rotation_reaches_only_its_identity() {
    use crate::snapshot::SECRET_TYPE;
    let set = crate::model::secrets::SecretSet::placeholder;
    let names = ["ROOTCA", "default"];
    let first = snapshot(None, &[("a", &["10.0.0.1"])])
        .with_secrets(set("ca", &[("web", "web-1"), ("db", "db-1")]));
    // Each proves its identity on the connection; its node metadata claims the same.
    let (mut web, mut db, mut ghost) = (
        AdsConnection::new().with_peer(Some(xds::peer("web"))),
        AdsConnection::new().with_peer(Some(xds::peer("db"))),
        AdsConnection::new().with_peer(Some(xds::peer("ghost"))),
    );
    let sds = |id| with_identity(request(SECRET_TYPE, &names, "", ""), id);
    let web_sds = one(&mut web, &sds("web"), &first).unwrap();
    assert_eq!(
        secrets_in(&web_sds),
        vec![
            ("ROOTCA".to_string(), "ca".to_string()),
            ("default".to_string(), "web-1".to_string())
        ]
    );
    let db_sds = one(&mut db, &sds("db"), &first).unwrap();
    assert_eq!(secrets_in(&db_sds)[1].1, "db-1");
    // An identity without a certificate gets the bundle only; Envoy keeps waiting for `default`.
    let ghost_sds = one(
        &mut ghost,
        &with_identity(
            request(SECRET_TYPE, &names, "", ""),
            xds::peer("ghost").id.as_str(),
        ),
        &first,
    )
    .unwrap();
    assert_eq!(secrets_in(&ghost_sds).len(), 1);
    assert!(one(&mut web, &ack(&web_sds, &names), &first).is_none());
    assert!(one(&mut db, &ack(&db_sds, &names), &first).is_none());

    // db rotates: only db is sent anything, and only `default`.
    let second = snapshot(Some(&first), &[("a", &["10.0.0.1"])])
        .with_secrets(set("ca", &[("web", "web-1"), ("db", "db-2")]));
    assert!(push(&mut web, &second).is_empty());
    let pushed = push(&mut db, &second);
    assert_eq!(pushed.len(), 1, "secrets only: no CDS/EDS/LDS/RDS");
    assert_eq!(
        secrets_in(&pushed[0]),
        vec![("default".to_string(), "db-2".to_string())]
    );
    // Envoy refuses it: not re-sent on an unrelated snapshot, the next rotation is.
    let mut nack = ack(&pushed[0], &names);
    nack = with_identity(nack, "db");
    nack.version_info = db_sds.version_info.clone();
    nack.error_detail = Some(xds::error_detail("bad cert"));
    let (what, out) = on_req(&mut db, &nack, &second).unwrap();
    assert!(matches!(what, RequestKind::Nack(_)) && out.is_empty());
    let third = snapshot(Some(&second), &[("a", &["10.0.0.2"])])
        .with_secrets(set("ca", &[("web", "web-1"), ("db", "db-2")]));
    assert!(push(&mut db, &third)
        .iter()
        .all(|r| r.type_url != SECRET_TYPE));
    let fourth = snapshot(Some(&third), &[("a", &["10.0.0.2"])])
        .with_secrets(set("ca", &[("web", "web-1"), ("db", "db-3")]));
    let pushed = push(&mut db, &fourth);
    assert_eq!(secrets_in(&pushed[0])[0].1, "db-3");
    // A new bundle reaches everyone; the ghost's certificate showing up reaches the ghost.
    let fifth = snapshot(Some(&fourth), &[("a", &["10.0.0.2"])]).with_secrets(set(
        "ca-2",
        &[("web", "web-1"), ("db", "db-3"), ("ghost", "ghost-1")],
    ));
    assert_eq!(
        secrets_in(&push(&mut web, &fifth)[0]),
        vec![("ROOTCA".to_string(), "ca-2".to_string())]
    );
    assert_eq!(
        secrets_in(&push(&mut ghost, &fifth)[0]),
        vec![
            ("ROOTCA".to_string(), "ca-2".to_string()),
            ("default".to_string(), "ghost-1".to_string())
        ]
    );
}

#[test]
fn a_claimed_identity_must_be_the_proven_one() {
    use crate::protocol::error::GrpcCode;
    use crate::snapshot::SECRET_TYPE;
    let set = crate::model::secrets::SecretSet::placeholder;
    let snap = snapshot(None, &[("a", &["10.0.0.1"])])
        .with_secrets(set("ca", &[("alpha", "alpha-1"), ("beta", "beta-1")]));
    let names = ["ROOTCA", "default"];
    let sds = |claim: &str| with_identity(request(SECRET_TYPE, &names, "", ""), claim);
    let alpha = || AdsConnection::new().with_peer(Some(xds::peer("alpha")));

    // Proven alpha, claiming beta (by name or by SPIFFE ID): refused, naming both; nothing is sent.
    for claim in ["beta", xds::peer("beta").id.as_str()] {
        let mut conn = alpha();
        let err = on_req(&mut conn, &sds(claim), &snap).unwrap_err();
        assert_eq!(err.code(), GrpcCode::PermissionDenied);
        let text = err.to_string();
        assert!(
            text.contains(claim) && text.contains(xds::peer("alpha").id.as_str()),
            "{text}"
        );
        assert!(conn.client().is_none(), "a refused client is not recorded");
    }
    // Claiming what was proven (the identity's name or its SPIFFE ID) is fine; alpha gets alpha's.
    for claim in ["alpha", xds::peer("alpha").id.as_str()] {
        let out = one(&mut alpha(), &sds(claim), &snap).unwrap();
        assert_eq!(secrets_in(&out)[1], ("default".into(), "alpha-1".into()));
    }
    // Asking for beta's secret by name gets nothing: only `default` and `ROOTCA` are answered.
    let mut conn = alpha();
    let ask_beta = request(SECRET_TYPE, &["beta", "default"], "", "");
    let out = one(&mut conn, &ask_beta, &snap).unwrap();
    assert_eq!(secrets_in(&out), vec![("default".into(), "alpha-1".into())]);

    // No proof: a claim is refused, and without a claim only the trust bundle is served.
    let err = on_req(&mut AdsConnection::new(), &sds("alpha"), &snap).unwrap_err();
    assert_eq!(err.code(), GrpcCode::PermissionDenied);
    assert!(err.to_string().contains("no identity"), "{err}");
    let out = one(
        &mut AdsConnection::new(),
        &request(SECRET_TYPE, &names, "", ""),
        &snap,
    )
    .unwrap();
    assert_eq!(secrets_in(&out), vec![("ROOTCA".into(), "ca".into())]);
}

/// Clients subscribed to and holding the same resources share one name set and one held map per
/// type; a change reaching all of them leaves them sharing again, and one client's NACK changes only
/// its own state.
#[test]
fn clients_with_equal_state_share_it_and_changes_copy_on_write() {
    let services: &[(&str, &[&str])] = &[
        ("share-a", &["10.0.0.1"]),
        ("share-b", &["10.0.0.2"]),
        ("share-c", &["10.0.0.3"]),
    ];
    let first = snapshot(None, services);
    let names = [
        "share-a.shop:8080",
        "share-b.shop:8080",
        "share-c.shop:8080",
    ];
    let mut conns: Vec<AdsConnection> = (0..3).map(|_| AdsConnection::new()).collect();
    let mut last = Vec::new();
    for conn in &mut conns {
        let cds = one(conn, &request(CLUSTER_TYPE, &[], "", ""), &first).unwrap();
        assert!(one(conn, &ack(&cds, &[]), &first).is_none());
        let eds = one(conn, &request(ENDPOINT_TYPE, &names, "", ""), &first).unwrap();
        assert!(one(conn, &ack(&eds, &names), &first).is_none());
        last.push(eds);
    }
    let state = |conn: &AdsConnection, kind| conn.type_state(kind).unwrap().clone();
    for kind in [ResourceType::Cluster, ResourceType::Endpoint] {
        let a = state(&conns[0], kind);
        for other in &conns[1..] {
            let b = state(other, kind);
            assert!(a.held.is_shared_with(&b.held), "{kind:?} held");
            assert_eq!(a.held.len(), 3);
        }
    }
    let eds = state(&conns[0], ResourceType::Endpoint);
    let eds1 = state(&conns[1], ResourceType::Endpoint);
    assert!(eds
        .names
        .as_ref()
        .unwrap()
        .is_shared_with(eds1.names.as_ref().unwrap()));

    // One endpoint changes: every client is sent only that, and they share the new map.
    let second = snapshot(
        Some(&first),
        &[
            ("share-a", &["10.0.0.1"]),
            ("share-b", &["10.0.0.9"]),
            ("share-c", &["10.0.0.3"]),
        ],
    );
    for conn in &mut conns {
        let pushed = push(conn, &second);
        assert_eq!(pushed.len(), 1);
        assert_eq!(cla_names(&pushed[0]), vec!["share-b.shop:8080"]);
        last.push(pushed[0].clone());
    }
    let after: Vec<_> = conns
        .iter()
        .map(|c| state(c, ResourceType::Endpoint))
        .collect();
    assert!(after[0].held.is_shared_with(&after[1].held));
    assert!(after[1].held.is_shared_with(&after[2].held));
    assert!(!after[0].held.is_shared_with(&eds.held));
    // The old map is as it was (the clones above still hold it).
    assert_ne!(
        eds.held.get("share-b.shop:8080"),
        after[0].held.get("share-b.shop:8080")
    );
    assert_eq!(version_string(after[0].held.digest()), last[3].version_info);

    // Client 0 refuses the change: it forgets what it was sent; the others keep sharing.
    let mut nack = ack(&last[3], &names);
    nack.version_info = last[0].version_info.clone();
    nack.error_detail = Some(envoy_types::pb::google::rpc::Status {
        code: 13,
        message: "bad".into(),
        ..Default::default()
    });
    assert!(matches!(
        on_req(&mut conns[0], &nack, &second).unwrap().0,
        RequestKind::Nack(_)
    ));
    let refused = state(&conns[0], ResourceType::Endpoint);
    assert_eq!(refused.held.len(), 2);
    assert!(!refused.held.contains_key("share-b.shop:8080"));
    let kept = state(&conns[1], ResourceType::Endpoint);
    assert_eq!(kept.held.len(), 3);
    assert!(kept
        .held
        .is_shared_with(&state(&conns[2], ResourceType::Endpoint).held));
}

/// What grpcio sends: its user agent, no metadata, the node on the first request only.
fn grpc_node() -> Node {
    Node {
        user_agent_name: "gRPC C-core".into(),
        client_features: vec!["envoy.lb.does_not_support_overprovisioning".into()],
        ..xds::node("grpc-1", "")
    }
}

/// A request after the first one: gRPC sends no node.
fn without_node(mut req: DiscoveryRequest) -> DiscoveryRequest {
    req.node = None;
    req
}

#[test]
fn a_grpc_client_is_answered_lds_rds_cds_eds_by_its_targets_name_and_acks_need_nothing_more() {
    let snap = snapshot(None, &[("a", &["10.0.0.1"]), ("b", &["10.0.0.2"])]);
    let mut conn = AdsConnection::new();
    let target = "a.shop:8080";
    let first = xds::request(grpc_node(), LISTENER_TYPE, &[target], "", "");
    let lds = one(&mut conn, &first, &snap).unwrap();
    assert_eq!(conn.client().unwrap().kind, crate::model::ClientKind::Grpc);
    assert_eq!(
        lds.resources.len(),
        1,
        "only the target, never outbound_http"
    );
    let listener = Listener::decode(lds.resources[0].value.as_slice()).unwrap();
    assert_eq!(listener.name, target);
    assert!(listener.api_listener.is_some());
    assert!(one(
        &mut conn,
        &without_node(xds::ack(grpc_node(), &lds, &[target])),
        &snap
    )
    .is_none());
    let rds = one(
        &mut conn,
        &without_node(xds::request(grpc_node(), ROUTE_TYPE, &[target], "", "")),
        &snap,
    )
    .unwrap();
    let routes = RouteConfiguration::decode(rds.resources[0].value.as_slice()).unwrap();
    assert_eq!(routes.virtual_hosts[0].domains, [target]);
    let cds = one(
        &mut conn,
        &without_node(xds::request(grpc_node(), CLUSTER_TYPE, &[EDS_A], "", "")),
        &snap,
    )
    .unwrap();
    assert_eq!(cds.resources.len(), 1, "the named cluster only");
    let eds = one(
        &mut conn,
        &without_node(xds::request(grpc_node(), ENDPOINT_TYPE, &[EDS_A], "", "")),
        &snap,
    )
    .unwrap();
    let cla = ClusterLoadAssignment::decode(eds.resources[0].value.as_slice()).unwrap();
    assert!(cla
        .endpoints
        .iter()
        .all(|g| g.load_balancing_weight.is_some()));
    for resp in [&rds, &cds, &eds] {
        let ack = without_node(xds::ack(grpc_node(), resp, &[]));
        let ack = DiscoveryRequest {
            resource_names: if resp.type_url == ROUTE_TYPE {
                vec![target.to_string()]
            } else {
                vec![EDS_A.to_string()]
            },
            ..ack
        };
        assert!(one(&mut conn, &ack, &snap).is_none(), "{}", resp.type_url);
    }
    for kind in [
        ResourceType::Listener,
        ResourceType::Route,
        ResourceType::Cluster,
        ResourceType::Endpoint,
    ] {
        let st = conn.type_state(kind).unwrap();
        assert_eq!(
            st.acked_version,
            st.sent.as_ref().map(|s| s.version.clone()),
            "{kind:?}"
        );
    }
    // A second target: the LDS answer carries both (a name left out would be a deletion).
    let both = without_node(xds::request(
        grpc_node(),
        LISTENER_TYPE,
        &[target, "b.shop:8080"],
        &lds.version_info,
        &lds.nonce,
    ));
    let lds2 = one(&mut conn, &both, &snap).unwrap();
    let names: Vec<String> = lds2
        .resources
        .iter()
        .map(|r| Listener::decode(r.value.as_slice()).unwrap().name)
        .collect();
    assert_eq!(names, [target, "b.shop:8080"]);
    // A target that does not exist is answered at once (the same two listeners): the client learns
    // it does not exist instead of waiting out its timer.
    let with_unknown = without_node(xds::request(
        grpc_node(),
        LISTENER_TYPE,
        &[target, "b.shop:8080", "nope.shop:8080"],
        &lds2.version_info,
        &lds2.nonce,
    ));
    let lds3 = one(&mut conn, &with_unknown, &snap).expect("an answer to the new name");
    assert_eq!(lds3.version_info, lds2.version_info);
    assert_eq!(lds3.resources, lds2.resources);
}

#[test]
fn a_client_that_names_listeners_by_target_is_a_grpc_client_even_without_a_user_agent() {
    let snap = snapshot(None, &[("a", &["10.0.0.1"])]);
    let mut conn = AdsConnection::new();
    let lds = one(
        &mut conn,
        &request(LISTENER_TYPE, &["a.shop:8080"], "", ""),
        &snap,
    )
    .unwrap();
    assert_eq!(conn.client().unwrap().kind, crate::model::ClientKind::Grpc);
    assert_eq!(lds.resources.len(), 1);
    // Envoy asks for every listener (or for its own by name): it stays an Envoy.
    for names in [
        &[][..],
        &["*"][..],
        &[crate::translate::resources::LISTENER_NAME][..],
    ] {
        let mut conn = AdsConnection::new();
        let lds = one(&mut conn, &request(LISTENER_TYPE, names, "", ""), &snap).unwrap();
        assert_eq!(conn.client().unwrap().kind, crate::model::ClientKind::Envoy);
        let listener = Listener::decode(lds.resources[0].value.as_slice()).unwrap();
        assert_eq!(listener.name, crate::translate::resources::LISTENER_NAME);
    }
    // Once something was sent the kind no longer changes.
    let mut conn = AdsConnection::new();
    one(&mut conn, &request(CLUSTER_TYPE, &[], "", ""), &snap).unwrap();
    one(
        &mut conn,
        &request(LISTENER_TYPE, &["a.shop:8080"], "", ""),
        &snap,
    );
    assert_eq!(conn.client().unwrap().kind, crate::model::ClientKind::Envoy);
}

#[test]
fn an_ack_releases_the_answers_resources_and_the_report_still_lists_what_the_client_holds() {
    use crate::protocol::inspect::Inspect;
    let snap = snapshot(None, &[("a", &["10.0.0.1"]), ("b", &["10.0.0.2"])]);
    let mut conn = AdsConnection::new();
    let kept = |conn: &AdsConnection, kind| {
        conn.types
            .get(&kind)
            .unwrap()
            .sent
            .as_ref()
            .map_or(0, |s| s.contents.len())
    };
    let held = |conn: &AdsConnection, kind| {
        let report = conn.type_reports().into_iter().find(|r| r.kind == kind);
        let mut names: Vec<String> = report.unwrap().held.into_iter().map(|(n, _)| n).collect();
        names.sort();
        names
    };
    let cds = one(&mut conn, &request(CLUSTER_TYPE, &[], "", ""), &snap).unwrap();
    let names = [EDS_A, "b.shop:8080"];
    let eds = one(&mut conn, &request(ENDPOINT_TYPE, &names, "", ""), &snap).unwrap();
    assert_eq!(kept(&conn, ResourceType::Cluster), 2);
    assert_eq!(kept(&conn, ResourceType::Endpoint), 2);
    one(&mut conn, &ack(&cds, &[]), &snap);
    one(&mut conn, &ack(&eds, &names), &snap);
    assert_eq!(kept(&conn, ResourceType::Cluster), 0);
    assert_eq!(kept(&conn, ResourceType::Endpoint), 0);
    assert_eq!(held(&conn, ResourceType::Cluster), names);
    assert_eq!(held(&conn, ResourceType::Endpoint), names);
    // The next answer is kept until its own ACK, so a NACK of it knows what was refused.
    let second = snapshot(Some(&snap), &[("a", &["10.0.0.9"]), ("b", &["10.0.0.2"])]);
    let pushed = push(&mut conn, &second);
    assert_eq!(kept(&conn, ResourceType::Endpoint), 1);
    let mut nack = ack(&pushed[0], &names);
    nack.version_info = eds.version_info.clone();
    nack.error_detail = Some(xds::error_detail("bad"));
    on_req(&mut conn, &nack, &second).unwrap();
    assert_eq!(held(&conn, ResourceType::Endpoint), vec!["b.shop:8080"]);
}
