//! Reading Envoy resources back: what tests compare in an answer.

use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::{address, socket_address::PortSpecifier};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, LbEndpoint,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{secret, Secret};
use prost::Message;

/// (address, port) of a host in a load assignment.
pub fn host(lb: &LbEndpoint) -> (String, u32) {
    let Some(HostIdentifier::Endpoint(e)) = &lb.host_identifier else {
        panic!("endpoint expected")
    };
    let Some(address::Address::SocketAddress(sa)) = &e.address.as_ref().unwrap().address else {
        panic!("socket address expected")
    };
    let Some(PortSpecifier::PortValue(port)) = sa.port_specifier else {
        panic!("port expected")
    };
    (sa.address.clone(), port)
}

/// One host of a load assignment as tests compare it: (address, port, health, weight).
pub type HostRow = (String, u32, i32, Option<u32>);

/// One locality group of a load assignment: (priority, zone, its hosts in order).
pub type LocalityGroup = (u32, String, Vec<HostRow>);

/// Each locality group of a load assignment, in order.
pub fn locality_groups(cla: &ClusterLoadAssignment) -> Vec<LocalityGroup> {
    cla.endpoints
        .iter()
        .map(|g| {
            let hosts = g
                .lb_endpoints
                .iter()
                .map(|lb| {
                    let (address, port) = host(lb);
                    let weight = lb.load_balancing_weight.as_ref().map(|w| w.value);
                    (address, port, lb.health_status, weight)
                })
                .collect();
            (g.priority, g.locality.as_ref().unwrap().zone.clone(), hosts)
        })
        .collect()
}

/// (name, certificate chain or trusted CA) of an encoded SDS `Secret` with inline bytes.
pub fn secret(encoded: &[u8]) -> (String, String) {
    let s = Secret::decode(encoded).unwrap();
    let source = match s.r#type.unwrap() {
        secret::Type::TlsCertificate(t) => t.certificate_chain.unwrap(),
        secret::Type::ValidationContext(v) => v.trusted_ca.unwrap(),
        other => panic!("unexpected {other:?}"),
    };
    let Some(Specifier::InlineBytes(b)) = source.specifier else {
        panic!("inline bytes expected")
    };
    (s.name, String::from_utf8(b).unwrap())
}
