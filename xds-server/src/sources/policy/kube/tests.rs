use super::*;
use xds_core::model::ServiceId;

fn object(ns: &str, name: &str, created: &str, spec: serde_json::Value) -> Arc<DynamicObject> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "failover.xds.dev/v1alpha1",
            "kind": "FailoverPolicy",
            "metadata": {"namespace": ns, "name": name, "creationTimestamp": created, "generation": 3},
            "spec": spec,
        }))
        .unwrap(),
    )
}

#[test]
fn valid_objects_apply_invalid_ones_are_rejected_alone_and_files_win_conflicts() {
    let file = PolicySet {
        entries: parse_policies(
            "policies/shop.yaml",
            "kind: FailoverPolicy\nmetadata: {name: file, namespace: shop}\nspec: {service: cart}\n",
        )
        .unwrap(),
    };
    let objects = vec![
        object(
            "shop",
            "checkout",
            "2026-01-01T00:00:00Z",
            json!({"service": "checkout", "panicThreshold": 5}),
        ),
        object(
            "shop",
            "typo",
            "2026-01-01T00:00:00Z",
            json!({"service": "x", "failoverPriorty": ["a"]}),
        ),
        object(
            "shop",
            "cart",
            "2026-01-01T00:00:00Z",
            json!({"service": "cart"}),
        ),
        // newer duplicate of the checkout scope
        object(
            "shop",
            "checkout-2",
            "2026-02-01T00:00:00Z",
            json!({"service": "checkout"}),
        ),
        object(
            "xds-system",
            "mesh",
            "2026-01-01T00:00:00Z",
            json!({"overprovisioningFactor": 200}),
        ),
    ];
    let (set, verdicts) = merge(&file, &objects, "xds-system");
    let v = |name: &str| verdicts.iter().find(|v| v.name == name).unwrap().clone();
    assert!(v("checkout").accepted);
    assert_eq!(v("checkout").generation, Some(3));
    let typo = v("typo");
    assert!(!typo.accepted);
    assert_eq!(typo.reason, "Invalid");
    assert!(
        typo.message.contains("did you mean `failoverPriority`"),
        "{}",
        typo.message
    );
    let cart = v("cart");
    assert_eq!((cart.accepted, cart.reason.as_str()), (false, "Conflict"));
    assert!(cart.message.contains("policy file"), "{}", cart.message);
    let dup = v("checkout-2");
    assert!(!dup.accepted);
    assert!(
        dup.message.contains("FailoverPolicy shop/checkout"),
        "{}",
        dup.message
    );
    assert!(v("mesh").accepted);
    let rejected = rejected(&verdicts);
    let sources: Vec<&str> = rejected.iter().map(|r| r.source.as_str()).collect();
    assert_eq!(
        sources,
        [
            "kubernetes:shop/cart",
            "kubernetes:shop/typo",
            "kubernetes:shop/checkout-2"
        ]
    );
    assert!(rejected[0].error.starts_with("Conflict: "), "{rejected:?}");
    assert!(rejected[1].error.starts_with("Invalid: "), "{rejected:?}");

    let http = xds_core::model::ServicePort {
        name: "http".into(),
        port: 80,
    };
    assert_eq!(
        set.resolve_port(&ServiceId::new("shop", "checkout"), &http, None)
            .policy
            .panic_threshold,
        5
    );
    assert_eq!(
        set.resolve_port(&ServiceId::new("other", "anything"), &http, None)
            .policy
            .overprovisioning_factor,
        200,
        "a policy without service in the mesh namespace is the mesh default"
    );
    let cart_origin = set
        .resolve_port(&ServiceId::new("shop", "cart"), &http, None)
        .origin;
    assert!(
        matches!(cart_origin, xds_core::policy::PolicyOrigin::Named { ref source, .. } if source == "policies/shop.yaml")
    );
}

#[test]
fn a_custom_resource_closing_a_backup_cycle_is_rejected() {
    let file = PolicySet {
        entries: parse_policies(
            "policies/a.yaml",
            "kind: FailoverPolicy\nmetadata: {name: a, namespace: shop}\n\
                 spec: {service: a, backups: [{service: b}]}\n",
        )
        .unwrap(),
    };
    let objects = vec![
        object(
            "shop",
            "b",
            "2026-01-01T00:00:00Z",
            json!({"service": "b", "backups": [{"service": "a"}]}),
        ),
        object(
            "shop",
            "c",
            "2026-01-02T00:00:00Z",
            json!({"service": "c", "backups": [{"service": "a"}]}),
        ),
        object(
            "shop",
            "d",
            "2026-01-03T00:00:00Z",
            json!({"service": "d", "backups": [{"service": "d"}]}),
        ),
    ];
    let (set, verdicts) = merge(&file, &objects, "xds-system");
    let verdict = |name: &str| verdicts.iter().find(|v| v.name == name).unwrap();
    assert!(!verdict("b").accepted);
    assert!(
        verdict("b").message.contains("shop/b → shop/a → shop/b"),
        "{:?}",
        verdict("b")
    );
    assert!(
        verdict("c").accepted,
        "c → a is no cycle: {:?}",
        verdict("c")
    );
    assert!(!verdict("d").accepted);
    assert!(
        verdict("d").message.contains("cannot back itself up"),
        "{:?}",
        verdict("d")
    );
    assert_eq!(set.entries.len(), 2);
}

#[test]
fn custom_resources_carry_the_policy_language_fields() {
    let objects = vec![
        object(
            "shop",
            "web",
            "2026-01-01T00:00:00Z",
            json!({
                "service": "web",
                "failoverPriority": ["topology.kubernetes.io/region", "topology.istio.io/network=net-a"],
                "distribute": [{"from": "eu-west4/*", "to": {"eu-west4/eu-west4-b/*": 80, "eu-west4/eu-west4-c/*": 20}}],
                "healthCheck": {"grpc": {"service": "shop.Web"}, "interval": "10s", "timeout": "1s"},
                "outlierDetection": {"enabled": false},
                "spillover": "allOrNothing",
            }),
        ),
        object(
            "shop",
            "weights",
            "2026-01-01T00:00:00Z",
            json!({"service": "cart", "distribute": [{"from": "*", "to": {"eu/b/*": 80, "eu/c/*": 30}}]}),
        ),
        object(
            "shop",
            "typo",
            "2026-01-01T00:00:00Z",
            json!({"service": "typo", "healthCheck": {"tcp": {}, "unhealthyTreshold": 2}}),
        ),
        object(
            "shop",
            "both",
            "2026-01-01T00:00:00Z",
            json!({"service": "both", "spillover": "allOrNothing", "overprovisioningFactor": 200}),
        ),
    ];
    let (set, verdicts) = merge(&PolicySet::default(), &objects, "xds-system");
    let v = |name: &str| verdicts.iter().find(|v| v.name == name).unwrap().clone();
    assert!(v("web").accepted, "{:?}", v("web"));
    let policy = &set.entries[0].policy;
    assert_eq!(
        policy.failover_priority[1],
        xds_core::policy::PriorityKey::pinned("topology.istio.io/network", "net-a")
    );
    assert_eq!(policy.distribute[0].to.len(), 2);
    assert_eq!(
        policy.health_check.as_ref().map(|h| h.protocol.clone()),
        Some(xds_core::policy::HealthCheckProtocol::Grpc {
            service: Some("shop.Web".into())
        })
    );
    assert_eq!(policy.outlier_detection, None);
    assert_eq!(
        policy.overprovisioning_factor,
        xds_core::policy::ALL_OR_NOTHING_FACTOR
    );
    let weights = v("weights");
    assert!(!weights.accepted);
    assert!(
        weights.message.starts_with(
            "spec.distribute[0].to: weights must add up to 100 (percent), they add up to 110"
        ),
        "{}",
        weights.message
    );
    let typo = v("typo");
    assert!(!typo.accepted);
    assert!(
        typo.message.contains("did you mean `unhealthyThreshold`?"),
        "{}",
        typo.message
    );
    let both = v("both");
    assert!(!both.accepted);
    assert!(
        both.message.starts_with("spec.spillover: ")
            && both.message.contains("spec.overprovisioningFactor"),
        "{}",
        both.message
    );
    assert_eq!(set.entries.len(), 1);
}

#[test]
fn unchanged_condition_is_detected() {
    let mut obj = (*object("shop", "a", "2026-01-01T00:00:00Z", json!({}))).clone();
    assert_eq!(current_condition(&obj), None);
    obj.data["status"] = json!({"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "policy is active"}]});
    assert_eq!(
        current_condition(&obj),
        Some(("True".into(), "Accepted".into(), "policy is active".into()))
    );
}

/// FailoverPolicy custom resources name the port as a JSON number or string.
#[test]
fn custom_resources_scope_a_port_by_number_or_name() {
    let object = |name: &str, port: serde_json::Value| {
        Arc::new(
            serde_json::from_value::<::kube::api::DynamicObject>(serde_json::json!({
                "apiVersion": "failover.xds.dev/v1alpha1",
                "kind": "FailoverPolicy",
                "metadata": {"namespace": "shop", "name": name},
                "spec": {"service": "web", "port": port, "panicThreshold": 5},
            }))
            .unwrap(),
        )
    };
    let objects = [
        object("by-number", serde_json::json!(8080)),
        object("by-name", serde_json::json!("grpc")),
        object("bad", serde_json::json!(0)),
    ];
    let (set, verdicts) = merge(&PolicySet::default(), &objects, "xds-system");
    let web = ServiceId::new("shop", "web");
    let scopes: Vec<&PolicyScope> = set.entries.iter().map(|e| &e.scope).collect();
    assert_eq!(
        scopes,
        [
            &PolicyScope::ServicePort(web.clone(), "grpc".into()),
            &PolicyScope::ServicePort(web.clone(), "8080".into()),
        ]
    );
    let bad = verdicts.iter().find(|v| v.name == "bad").unwrap();
    assert!(!bad.accepted);
    assert!(bad.message.starts_with("spec.port: "), "{}", bad.message);
    assert_eq!(
        set.resolve_port(
            &web,
            &xds_core::model::ServicePort {
                name: "http".into(),
                port: 8080,
            },
            None,
        )
        .policy
        .panic_threshold,
        5
    );
}
