use super::*;
use crate::snapshot::{CLUSTER_TYPE, ENDPOINT_TYPE};
use crate::testing::{envoy, mesh, xds};

fn snapshot(prev: Option<&Snapshot>, services: &[(&str, &[&str])]) -> Snapshot {
    xds::snapshot(prev, mesh::registry(8080, services))
}

fn req(type_url: &str, sub: &[&str], unsub: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
    xds::delta_request(xds::node("n", ""), type_url, sub, unsub, nonce)
}

fn names(r: &DeltaResponse) -> Vec<&str> {
    r.resources.iter().map(|r| r.name()).collect()
}

fn names_of(r: &DeltaResponse) -> Vec<(String, String)> {
    r.resources
        .iter()
        .map(|e| envoy::secret(&e.resource.any.value))
        .collect()
}

#[test]
fn secrets_follow_identity_subscriptions_acks_and_nacks() {
    use crate::snapshot::SECRET_TYPE;
    let set = crate::model::secrets::SecretSet::placeholder;
    let sds = |identity: &str, sub: &[&str], nonce: &str| {
        let mut r = req(SECRET_TYPE, sub, &[], nonce);
        r.node.as_mut().unwrap().metadata = Some(xds::metadata(&[("identity", identity)]));
        r
    };
    let s1 = snapshot(None, &[("a", &["10.0.0.1"])])
        .with_secrets(set("ca", &[("web", "web-1"), ("db", "db-1")]));
    let (mut web, mut db) = (
        DeltaConnection::new().with_peer(Some(xds::peer("web"))),
        DeltaConnection::new().with_peer(Some(xds::peer("db"))),
    );
    let (_, out) = web.on_request(&sds("web", &["default"], ""), &s1).unwrap();
    assert_eq!(
        names_of(&out[0]),
        vec![("default".to_string(), "web-1".to_string())]
    );
    let (_, acked) = web
        .on_request(&sds("web", &["ROOTCA"], &out[0].nonce), &s1)
        .unwrap();
    assert_eq!(names(&acked[0]), vec!["ROOTCA"], "only the new name");
    web.on_request(&sds("web", &[], &acked[0].nonce), &s1)
        .unwrap();
    let (_, out) = db
        .on_request(&sds("db", &["default", "ROOTCA"], ""), &s1)
        .unwrap();
    db.on_request(&sds("db", &[], &out[0].nonce), &s1).unwrap();

    // web rotates: web gets its `default`, db nothing.
    let s2 = snapshot(Some(&s1), &[("a", &["10.0.0.1"])])
        .with_secrets(set("ca", &[("web", "web-2"), ("db", "db-1")]));
    assert!(db.on_snapshot(&s2).is_empty());
    let pushed = web.on_snapshot(&s2);
    assert_eq!(pushed.len(), 1);
    assert_eq!(
        names_of(&pushed[0]),
        vec![("default".to_string(), "web-2".to_string())]
    );
    // NACKed: that version is not sent again; the next one is.
    let mut nack = sds("web", &[], &pushed[0].nonce);
    nack.error_detail = Some(xds::error_detail("bad"));
    let (what, out) = web.on_request(&nack, &s2).unwrap();
    assert!(matches!(what, RequestKind::Nack(_)) && out.is_empty());
    let s3 = snapshot(Some(&s2), &[("a", &["10.0.0.2"])])
        .with_secrets(set("ca", &[("web", "web-2"), ("db", "db-1")]));
    assert!(web
        .on_snapshot(&s3)
        .iter()
        .all(|r| r.type_url != SECRET_TYPE));
    let s4 = snapshot(Some(&s3), &[("a", &["10.0.0.2"])])
        .with_secrets(set("ca", &[("web", "web-3"), ("db", "db-1")]));
    let pushed = web.on_snapshot(&s4);
    assert_eq!(names_of(&pushed[0])[0].1, "web-3");
    // An identity that disappears is not removed from its client: Envoy would refuse that
    // ("Missing SDS resources") and keeps using the last certificate anyway.
    let s5 =
        snapshot(Some(&s4), &[("a", &["10.0.0.2"])]).with_secrets(set("ca", &[("web", "web-3")]));
    assert!(db.on_snapshot(&s5).is_empty());
}

#[test]
fn wildcard_cds_sends_all_then_only_changes_and_removals() {
    let s1 = snapshot(None, &[("a", &["10.0.0.1"]), ("b", &["10.0.0.2"])]);
    let mut c = DeltaConnection::new();
    let (_, out) = c.on_request(&req(CLUSTER_TYPE, &[], &[], ""), &s1).unwrap();
    assert_eq!(names(&out[0]), vec!["a.shop:8080", "b.shop:8080"]);
    let (what, out2) = c
        .on_request(&req(CLUSTER_TYPE, &[], &[], &out[0].nonce), &s1)
        .unwrap();
    assert_eq!(what, RequestKind::Ack);
    assert!(out2.is_empty());
    // b removed, c added; a unchanged (endpoint changes do not touch CDS)
    let s2 = snapshot(Some(&s1), &[("a", &["10.0.0.9"]), ("c", &["10.0.0.3"])]);
    let pushed = c.on_snapshot(&s2);
    assert_eq!(pushed.len(), 1);
    assert_eq!(names(&pushed[0]), vec!["c.shop:8080"]);
    assert_eq!(pushed[0].removed_resources, vec!["b.shop:8080"]);
}

#[test]
fn eds_follows_subscribe_and_unsubscribe_and_reconnect_skips_held_versions() {
    let s1 = snapshot(None, &[("a", &["10.0.0.1"]), ("b", &["10.0.0.2"])]);
    let mut c = DeltaConnection::new();
    let (_, out) = c
        .on_request(&req(ENDPOINT_TYPE, &["a.shop:8080"], &[], ""), &s1)
        .unwrap();
    assert_eq!(names(&out[0]), vec!["a.shop:8080"]);
    let held_a = String::from_utf8(out[0].resources[0].version().to_vec()).unwrap();
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
    let s1 = snapshot(None, &[("a", &["10.0.0.1"])]);
    let mut c = DeltaConnection::new();
    let (_, out) = c
        .on_request(&req(ENDPOINT_TYPE, &["a.shop:8080"], &[], ""), &s1)
        .unwrap();
    let (what, _) = c
        .on_request(&req(ENDPOINT_TYPE, &[], &[], "999"), &s1)
        .unwrap();
    assert_eq!(what, RequestKind::StaleNonce);
    let mut nack = req(ENDPOINT_TYPE, &[], &[], &out[0].nonce);
    nack.error_detail = Some(xds::error_detail("dump\nreal reason"));
    let (what, resend) = c.on_request(&nack, &s1).unwrap();
    assert!(matches!(what, RequestKind::Nack(ref n) if n.message == "real reason"));
    assert!(resend.is_empty(), "the refused version is not sent again");
    let same = snapshot(Some(&s1), &[("a", &["10.0.0.1"])]);
    assert!(c.on_snapshot(&same).is_empty());
    let fixed = snapshot(Some(&same), &[("a", &["10.0.0.2"])]);
    assert_eq!(c.on_snapshot(&fixed).len(), 1);
}

#[test]
fn recreated_cluster_gets_its_endpoints_again() {
    use crate::policy::FailoverPolicy;
    let s1 = snapshot(None, &[("a", &["10.0.0.1"])]);
    let mut c = DeltaConnection::new();
    let (_, cds) = c.on_request(&req(CLUSTER_TYPE, &[], &[], ""), &s1).unwrap();
    c.on_request(&req(CLUSTER_TYPE, &[], &[], &cds[0].nonce), &s1)
        .unwrap();
    let (_, eds) = c
        .on_request(&req(ENDPOINT_TYPE, &["a.shop:8080"], &[], ""), &s1)
        .unwrap();
    c.on_request(&req(ENDPOINT_TYPE, &[], &[], &eds[0].nonce), &s1)
        .unwrap();
    let policies = mesh::mesh_wide(FailoverPolicy {
        panic_threshold: 7,
        ..FailoverPolicy::default()
    });
    let s2 = xds::snapshot_with(Some(&s1), s1.registry.clone(), policies);
    let pushed = c.on_snapshot(&s2);
    let types: Vec<&str> = pushed.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(types, vec![CLUSTER_TYPE, ENDPOINT_TYPE]);
    assert_eq!(names(&pushed[1]), vec!["a.shop:8080"]);
}

#[test]
fn one_response_in_flight_per_type() {
    let s1 = snapshot(None, &[("a", &["10.0.0.1"])]);
    let mut c = DeltaConnection::new();
    let (_, out) = c
        .on_request(&req(ENDPOINT_TYPE, &["a.shop:8080"], &[], ""), &s1)
        .unwrap();
    let s2 = snapshot(Some(&s1), &[("a", &["10.0.0.2"])]);
    assert!(c.on_snapshot(&s2).is_empty(), "waits for the ACK");
    let (_, out) = c
        .on_request(&req(ENDPOINT_TYPE, &[], &[], &out[0].nonce), &s2)
        .unwrap();
    assert_eq!(out.len(), 1, "the ACK releases the newer version");
}

#[test]
fn changes_made_while_a_response_is_in_flight_all_go_out_with_the_ack() {
    let s1 = snapshot(
        None,
        &[
            ("a", &["10.0.0.1"]),
            ("b", &["10.0.0.2"]),
            ("c", &["10.0.0.3"]),
        ],
    );
    let mut c = DeltaConnection::new();
    let all = ["a.shop:8080", "b.shop:8080", "c.shop:8080"];
    let (_, out) = c
        .on_request(&req(ENDPOINT_TYPE, &all, &[], ""), &s1)
        .unwrap();
    assert_eq!(names(&out[0]), all);
    c.on_snapshot(&s1);
    // Two generations, each changing one cluster, while the first answer is unacknowledged.
    let s2 = snapshot(
        Some(&s1),
        &[
            ("a", &["10.0.0.9"]),
            ("b", &["10.0.0.2"]),
            ("c", &["10.0.0.3"]),
        ],
    );
    assert!(c.on_snapshot(&s2).is_empty());
    let s3 = snapshot(
        Some(&s2),
        &[
            ("a", &["10.0.0.9"]),
            ("b", &["10.0.0.8"]),
            ("c", &["10.0.0.3"]),
        ],
    );
    assert!(c.on_snapshot(&s3).is_empty());
    let (_, out) = c
        .on_request(&req(ENDPOINT_TYPE, &[], &[], &out[0].nonce), &s3)
        .unwrap();
    assert_eq!(names(&out[0]), vec!["a.shop:8080", "b.shop:8080"]);
    // Unchanged afterwards: the ACK of that answer sends nothing.
    let (_, after) = c
        .on_request(&req(ENDPOINT_TYPE, &[], &[], &out[0].nonce), &s3)
        .unwrap();
    assert!(after.is_empty());
    // A service removed: its name goes out as removed.
    let s4 = snapshot(Some(&s3), &[("a", &["10.0.0.9"]), ("b", &["10.0.0.8"])]);
    let out = c.on_snapshot(&s4);
    assert!(out[0].resources.is_empty());
    assert_eq!(out[0].removed_resources, vec!["c.shop:8080"]);
}

/// Delta clients with the same subscriptions share their name set and held map; an unsubscribe by
/// one copies on write and leaves the others as they were.
#[test]
fn clients_with_equal_state_share_it_and_changes_copy_on_write() {
    let services: &[(&str, &[&str])] = &[("dshare-a", &["10.0.0.1"]), ("dshare-b", &["10.0.0.2"])];
    let first = snapshot(None, services);
    let both = ["dshare-a.shop:8080", "dshare-b.shop:8080"];
    let mut conns: Vec<DeltaConnection> = (0..2).map(|_| DeltaConnection::new()).collect();
    for conn in &mut conns {
        let (_, out) = conn
            .on_request(&req(ENDPOINT_TYPE, &both, &[], ""), &first)
            .unwrap();
        assert_eq!(out[0].resources.len(), 2);
        conn.on_request(&req(ENDPOINT_TYPE, &[], &[], &out[0].nonce), &first)
            .unwrap();
    }
    let state = |conn: &DeltaConnection| conn.type_state(ResourceType::Endpoint).unwrap().clone();
    let (a, b) = (state(&conns[0]), state(&conns[1]));
    assert!(a.names.is_shared_with(&b.names));
    assert!(a.held.is_shared_with(&b.held));
    assert_eq!(a.held.len(), 2);

    let (_, out) = conns[0]
        .on_request(
            &req(ENDPOINT_TYPE, &[], &["dshare-a.shop:8080"], ""),
            &first,
        )
        .unwrap();
    assert!(out.is_empty());
    let (a2, b2) = (state(&conns[0]), state(&conns[1]));
    assert_eq!(
        a2.names.iter().collect::<Vec<_>>(),
        vec!["dshare-b.shop:8080"]
    );
    assert_eq!(
        a2.held.keys().collect::<Vec<_>>(),
        vec!["dshare-b.shop:8080"]
    );
    assert!(b2.held.is_shared_with(&b.held));
    assert_eq!(b2.names.len(), 2);
    // Subscribing again sends it again, and the two share once more.
    let (_, out) = conns[0]
        .on_request(
            &req(ENDPOINT_TYPE, &["dshare-a.shop:8080"], &[], ""),
            &first,
        )
        .unwrap();
    assert_eq!(names(&out[0]), vec!["dshare-a.shop:8080"]);
    conns[0]
        .on_request(&req(ENDPOINT_TYPE, &[], &[], &out[0].nonce), &first)
        .unwrap();
    let a3 = state(&conns[0]);
    assert!(a3.held.is_shared_with(&b2.held));
    assert!(a3.names.is_shared_with(&b2.names));
}
