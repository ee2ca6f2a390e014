//! Reading Envoy resources back: what tests compare in an answer.

use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::{address, socket_address::PortSpecifier};
use envoy_types::pb::envoy::config::endpoint::v3::{lb_endpoint::HostIdentifier, LbEndpoint};
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
