//! Priorities are computed per client locality: the same service looks different from different zones.

use std::collections::BTreeMap;

use e2e::envoy::Envoy;
use e2e::modes::XdsProtocol;
use e2e::topology::{Mesh, CLUSTER, EAST_B, EAST_C, HOST, WEST_A};
use e2e::traffic;

e2e::both_protocols!(clients_in_different_zones_see_different_priorities);

/// zone → priorities of its hosts as this Envoy sees them.
fn priorities_by_zone(envoy: &Envoy) -> BTreeMap<String, Vec<u32>> {
    let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for h in envoy.hosts(CLUSTER) {
        out.entry(h.zone).or_default().push(h.priority);
    }
    out
}

fn expect(pairs: &[(&str, u32)], per_zone: usize) -> BTreeMap<String, Vec<u32>> {
    pairs
        .iter()
        .map(|(z, p)| (z.to_string(), vec![*p; per_zone]))
        .collect()
}

fn clients_in_different_zones_see_different_priorities(protocol: XdsProtocol) {
    let mesh = Mesh::start(2).protocol(protocol);
    let east = mesh.envoy("client-east1-b", EAST_B);
    let west = mesh.envoy("client-west1-a", WEST_A);

    let seen_east = priorities_by_zone(&east);
    let seen_west = priorities_by_zone(&west);
    println!("client in us-east1-b sees {seen_east:?}");
    println!("client in us-west1-a sees {seen_west:?}");
    assert_eq!(
        seen_east,
        expect(&[(EAST_B.zone, 0), (EAST_C.zone, 1), (WEST_A.zone, 2)], 2)
    );
    // From us-west1 both us-east1 zones are just "another region": one level, no gap.
    assert_eq!(
        seen_west,
        expect(&[(WEST_A.zone, 0), (EAST_B.zone, 1), (EAST_C.zone, 1)], 2)
    );

    // Each client got its own listener address (node metadata) and the shared route config.
    for envoy in [&east, &west] {
        let listeners = envoy.config_dump_section("ListenersConfigDump");
        let listener = &listeners["dynamic_listeners"][0];
        assert_eq!(
            listener["name"].as_str(),
            Some("outbound_http"),
            "{listeners}"
        );
        let sa = &listener["active_state"]["listener"]["address"]["socket_address"];
        assert_eq!(sa["address"].as_str(), Some("127.0.0.1"), "{listener}");
        assert_eq!(
            sa["port_value"].as_u64(),
            Some(u64::from(envoy.listener_addr().port()))
        );
        let routes = envoy.config_dump_section("RoutesConfigDump");
        assert_eq!(
            routes["dynamic_route_configs"][0]["route_config"]["name"].as_str(),
            Some("outbound"),
            "{routes}"
        );
    }

    // Each client is served by its own zone.
    let t = traffic::send(
        east.listener_addr(),
        HOST,
        20,
        std::time::Duration::from_millis(5),
    );
    assert!(t.all(EAST_B.zone), "{t}");
    let t = traffic::send(
        west.listener_addr(),
        HOST,
        20,
        std::time::Duration::from_millis(5),
    );
    assert!(t.all(WEST_A.zone), "{t}");

    // Every host name form routes to the service.
    for host in [
        "echo",
        "echo.demo",
        "echo.demo:8080",
        "echo.demo.svc",
        "echo.demo.svc.cluster.local",
        "echo.demo.svc.cluster.local:8080",
    ] {
        assert_eq!(
            traffic::request(east.listener_addr(), host).as_deref(),
            Ok(EAST_B.zone),
            "Host: {host}"
        );
    }
}
