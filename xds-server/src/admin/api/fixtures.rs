//! The services and snapshots the admin API's tests answer from.

use std::collections::BTreeMap;
use std::sync::Arc;
use xds_core::model::{Endpoint, Health, Locality, Registry, Service, ServiceId, ServicePort};
use xds_core::policy::parse::parse_policies;
use xds_core::policy::PolicySet;
use xds_core::snapshot::{Snapshot, TranslateSettings};

pub(super) fn ep(ip: &str, region: &str, zone: &str, health: Health) -> Endpoint {
    Endpoint {
        address: ip.parse().unwrap(),
        port_overrides: BTreeMap::new(),
        locality: Locality::new(region, zone, ""),
        labels: BTreeMap::new(),
        health,
        identity: None,
    }
}

pub(super) fn service(ns: &str, name: &str) -> Service {
    Service {
        traffic_distribution: None,
        identity: None,
        id: ServiceId::new(ns, name),
        ports: vec![ServicePort {
            name: "http".into(),
            port: 8080,
        }],
        endpoints: vec![
            ep("10.0.0.1", "us-east1", "us-east1-b", Health::Healthy),
            ep("10.0.0.2", "us-east1", "us-east1-c", Health::Healthy),
            ep("10.0.1.1", "us-west1", "us-west1-a", Health::Unhealthy),
        ],
    }
}

pub(super) fn snapshot(policies: PolicySet) -> Snapshot {
    Snapshot::build(
        None,
        Arc::new(Registry::from_services([
            service("shop", "checkout"),
            service("shop", "cart"),
            service("other", "cart"),
        ])),
        Arc::new(policies),
        TranslateSettings::default(),
    )
}

/// shop/web (ports http 8080, grpc 9090, trafficDistribution PreferSameZone) under a namespace
/// default ranking by cluster only, with a policy for its grpc port.
pub(super) fn per_port_snapshot() -> Snapshot {
    let mut web = service("shop", "web");
    web.ports.push(ServicePort {
        name: "grpc".into(),
        port: 9090,
    });
    web.traffic_distribution = Some(xds_core::model::TrafficDistribution::PreferSameZone);
    let set = PolicySet {
        entries: parse_policies(
            "p.yaml",
            "kind: FailoverPolicy\nmetadata: {name: defaults, namespace: shop}\n\
                 spec: {failoverPriority: [topology.istio.io/cluster], panicThreshold: 5}\n---\n\
                 kind: FailoverPolicy\nmetadata: {name: web-grpc, namespace: shop}\n\
                 spec: {service: web, port: grpc, panicThreshold: 9}\n",
        )
        .unwrap(),
    };
    Snapshot::build(
        None,
        Arc::new(Registry::from_services([web, service("shop", "cart")])),
        Arc::new(set),
        TranslateSettings::default(),
    )
}

pub(super) const WEB_HTTP_POLICY: &str =
    "Service shop/web spec.trafficDistribution=PreferSameZone \
                                   (over namespace default shop/defaults)";
