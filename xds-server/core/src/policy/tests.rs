use super::*;

fn entry(scope: PolicyScope, factor: u32) -> PolicyEntry {
    PolicyEntry {
        scope,
        origin: PolicyOrigin::Named {
            namespace: "x".into(),
            name: format!("p{factor}"),
            source: "test".into(),
        },
        policy: Arc::new(FailoverPolicy {
            overprovisioning_factor: factor,
            ..FailoverPolicy::default()
        }),
    }
}

#[test]
fn most_specific_scope_wins() {
    let set = PolicySet {
        entries: vec![
            entry(PolicyScope::Mesh, 101),
            entry(PolicyScope::Namespace("shop".into()), 102),
            entry(
                PolicyScope::Service(ServiceId::new("shop", "checkout")),
                103,
            ),
        ],
    };
    let factor = |ns: &str, name: &str| {
        set.resolve_port(&ServiceId::new(ns, name), &http(), None)
            .policy
            .overprovisioning_factor
    };
    assert_eq!(factor("shop", "checkout"), 103);
    assert_eq!(factor("shop", "cart"), 102);
    assert_eq!(factor("other", "checkout"), 101);
    let empty = PolicySet::default();
    let resolved = empty.resolve_port(&ServiceId::new("a", "b"), &http(), None);
    assert_eq!(resolved.origin, PolicyOrigin::BuiltIn);
    assert_eq!(*resolved.policy, FailoverPolicy::default());
    // Every port without a policy shares the built-in one (what is worked out per policy, a
    // client's class, is then worked out once for all of them).
    let other = empty.resolve_port(&ServiceId::new("c", "d"), &http(), None);
    assert!(Arc::ptr_eq(&resolved.policy, &other.policy));
}

fn http() -> ServicePort {
    ServicePort {
        name: "http".into(),
        port: 8080,
    }
}

/// The answer does not depend on the order of the entries, and look-alike scopes (another
/// service of the namespace, the same name in another namespace, another port) never apply.
#[test]
fn resolution_ignores_entry_order_and_look_alike_scopes() {
    let web = ServiceId::new("shop", "web");
    let entries = vec![
        entry(
            PolicyScope::ServicePort(ServiceId::new("shop", "api"), "http".into()),
            1,
        ),
        entry(PolicyScope::ServicePort(web.clone(), "9090".into()), 2),
        entry(PolicyScope::Service(ServiceId::new("other", "web")), 3),
        entry(PolicyScope::Namespace("other".into()), 4),
        entry(PolicyScope::Mesh, 101),
        entry(PolicyScope::Namespace("shop".into()), 102),
        entry(PolicyScope::Service(web.clone()), 103),
    ];
    for reversed in [false, true] {
        let mut entries = entries.clone();
        if reversed {
            entries.reverse();
        }
        let mut set = PolicySet { entries };
        let at = |set: &PolicySet, d| set.resolve_port(&web, &http(), d);
        assert_eq!(at(&set, None).policy.overprovisioning_factor, 103);
        set.entries
            .retain(|e| e.scope != PolicyScope::Service(web.clone()));
        let zone = at(&set, Some(TrafficDistribution::PreferSameZone));
        assert_eq!(
            zone.policy.overprovisioning_factor, 102,
            "reversed {reversed}"
        );
        assert!(
            zone.origin
                .describe()
                .ends_with("(over namespace default x/p102)"),
            "{}",
            zone.origin.describe()
        );
        set.entries
            .retain(|e| e.scope != PolicyScope::Namespace("shop".into()));
        assert_eq!(at(&set, None).policy.overprovisioning_factor, 101);
    }
}

/// Service port > service > the Service's trafficDistribution > namespace > mesh > built-in,
/// each layer removed in turn.
#[test]
fn resolve_order_has_six_layers() {
    let web = ServiceId::new("shop", "web");
    let grpc = ServicePort {
        name: "grpc".into(),
        port: 9090,
    };
    let mut set = PolicySet {
        entries: vec![
            entry(PolicyScope::Mesh, 101),
            entry(PolicyScope::Namespace("shop".into()), 102),
            entry(PolicyScope::Service(web.clone()), 103),
            entry(PolicyScope::ServicePort(web.clone(), "http".into()), 104),
        ],
    };
    let zone = Some(TrafficDistribution::PreferSameZone);
    let at = |set: &PolicySet, port: &ServicePort| set.resolve_port(&web, port, zone);
    // 1. service port (by name)
    assert_eq!(at(&set, &http()).policy.overprovisioning_factor, 104);
    // ... and another port of the service falls through to 2. the service policy
    assert_eq!(at(&set, &grpc).policy.overprovisioning_factor, 103);
    set.entries.pop();
    assert_eq!(at(&set, &http()).policy.overprovisioning_factor, 103);
    assert_eq!(
        at(&set, &http()).policy.failover_priority,
        default_failover_priority(),
        "a policy naming the service wins over its trafficDistribution"
    );
    // 3. the Service's trafficDistribution, over the namespace default
    set.entries.pop();
    let r = at(&set, &http());
    assert_eq!(
        r.policy.overprovisioning_factor, 102,
        "other settings inherited"
    );
    assert_eq!(
        r.policy.failover_priority,
        traffic_distribution_priority(TrafficDistribution::PreferSameZone)
    );
    assert!(r.policy.splits_by_cluster());
    assert_eq!(
        r.origin.describe(),
        "Service shop/web spec.trafficDistribution=PreferSameZone (over namespace default x/p102)"
    );
    // 4. namespace default (no trafficDistribution)
    assert_eq!(
        set.resolve_port(&web, &http(), None)
            .policy
            .overprovisioning_factor,
        102
    );
    // over the mesh default, then over the built-in default
    set.entries.pop();
    let r = at(&set, &http());
    assert_eq!(r.policy.overprovisioning_factor, 101);
    assert!(r.origin.describe().ends_with("(over mesh default x/p101)"));
    // 5. mesh default
    assert_eq!(
        set.resolve_port(&web, &http(), None)
            .policy
            .overprovisioning_factor,
        101
    );
    set.entries.pop();
    let r = at(&set, &http());
    assert_eq!(
        r.origin.describe(),
        "Service shop/web spec.trafficDistribution=PreferSameZone (over built-in default)"
    );
    assert_eq!(
        *r.policy,
        FailoverPolicy {
            failover_priority: traffic_distribution_priority(TrafficDistribution::PreferSameZone),
            ..FailoverPolicy::default()
        }
    );
    // 6. built-in default
    assert_eq!(
        set.resolve_port(&web, &http(), None).origin,
        PolicyOrigin::BuiltIn
    );
}

#[test]
fn prefer_same_node_adds_the_node_after_the_zone() {
    let r = PolicySet::default().resolve_port(
        &ServiceId::new("shop", "web"),
        &http(),
        Some(TrafficDistribution::PreferSameNode),
    );
    let keys: Vec<String> = r
        .policy
        .failover_priority
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(keys, [labels::REGION, labels::ZONE, labels::HOSTNAME]);
    assert!(r.policy.client_keys().contains(&labels::HOSTNAME));
    let close = PolicySet::default().resolve_port(
        &ServiceId::new("shop", "web"),
        &http(),
        Some(TrafficDistribution::PreferClose),
    );
    assert_eq!(
        close.policy.failover_priority,
        traffic_distribution_priority(TrafficDistribution::PreferSameZone)
    );
}

#[test]
fn a_port_policy_matches_by_name_or_number_and_the_name_wins() {
    let web = ServiceId::new("shop", "web");
    let mut set = PolicySet {
        entries: vec![
            entry(PolicyScope::ServicePort(web.clone(), "8080".into()), 1080),
            entry(PolicyScope::Service(web.clone()), 103),
        ],
    };
    let factor = |set: &PolicySet, port: &ServicePort| {
        set.resolve_port(&web, port, None)
            .policy
            .overprovisioning_factor
    };
    assert_eq!(factor(&set, &http()), 1080, "by number");
    let other = ServicePort {
        name: "admin".into(),
        port: 9000,
    };
    assert_eq!(factor(&set, &other), 103);
    set.entries.push(entry(
        PolicyScope::ServicePort(web.clone(), "http".into()),
        1081,
    ));
    assert_eq!(factor(&set, &http()), 1081, "the name wins over the number");
    // Unnamed ports (single-port Kubernetes Services) match by number only.
    let unnamed = ServicePort {
        name: String::new(),
        port: 8080,
    };
    assert_eq!(factor(&set, &unnamed), 1080);
    // Another service's port policy does not apply.
    assert_eq!(
        set.resolve_port(&ServiceId::new("shop", "api"), &http(), None)
            .origin,
        PolicyOrigin::BuiltIn
    );
}

#[test]
fn backup_cycles_count_port_policies_as_the_service() {
    let (a, b) = (ServiceId::new("shop", "a"), ServiceId::new("shop", "b"));
    let backed = |scope: PolicyScope, to: &ServiceId| PolicyEntry {
        policy: Arc::new(FailoverPolicy {
            backups: vec![BackupService {
                service: to.clone(),
                cluster: None,
            }],
            ..FailoverPolicy::default()
        }),
        ..entry(scope, 100)
    };
    let a_port = backed(PolicyScope::ServicePort(a.clone(), "http".into()), &b);
    let b_service = backed(PolicyScope::Service(b.clone()), &a);
    assert_eq!(
        backup_cycle(&b_service, [&a_port]),
        Some(vec![b.clone(), a.clone(), b.clone()])
    );
    let b_port = backed(PolicyScope::ServicePort(b.clone(), "grpc".into()), &a);
    assert_eq!(
        backup_cycle(&a_port, [&b_port]),
        Some(vec![a.clone(), b.clone(), a.clone()])
    );
    // A service policy and a port policy of the same service are not a cycle.
    let a_service = backed(PolicyScope::Service(a.clone()), &b);
    assert_eq!(backup_cycle(&a_port, [&a_service]), None);
}

#[test]
fn failover_rules_add_region_to_client_keys() {
    let policy = FailoverPolicy {
        failover_priority: vec![PriorityKey::label("topology.istio.io/cluster")],
        failover: vec![RegionFailover {
            from: "a".into(),
            to: "b".into(),
        }],
        ..FailoverPolicy::default()
    };
    assert_eq!(
        policy.client_keys(),
        vec!["topology.istio.io/cluster", labels::REGION]
    );
    assert_eq!(policy.failover_targets("a").collect::<Vec<_>>(), vec!["b"]);
    assert_eq!(policy.failover_targets("b").count(), 0);
}
