//! mTLS between sidecars: the SDS secrets, the client side (a cluster's TLS transport socket) and the
//! server side (a sidecar's inbound listener that terminates mTLS and forwards to its app). Pure.
//!
//! Every TLS context takes its certificate and trust bundle from SDS over the same ADS stream, under
//! Istio's names, so a rotated certificate reaches Envoy without touching clusters or listeners.
//!
//! Secure naming: a client checks that the server it reached carries one of the service's
//! identities (a URI SAN), not only a certificate of the trust bundle, when those are known.

use envoy_types::pb::envoy::config::cluster::v3::{
    cluster::{ClusterDiscoveryType, DiscoveryType},
    Cluster,
};
use envoy_types::pb::envoy::config::core::v3::{
    data_source::Specifier, transport_socket, DataSource, TransportSocket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    tcp_proxy::ClusterSpecifier, TcpProxy,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    secret,
    subject_alt_name_matcher::SanType,
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
    SubjectAltNameMatcher, TlsCertificate, UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::util::pack_any;

use super::resources::{ads_config_source, socket_address};
use crate::model::secrets::Identity;
pub use crate::model::Inbound;
use crate::model::SpiffeId;
use std::collections::BTreeSet;

/// The SDS secret with this sidecar's certificate chain and key (Istio's name).
pub const CERT_SECRET: &str = "default";
/// The SDS secret with the trust bundle, as a validation context (Istio's name).
pub const ROOT_SECRET: &str = "ROOTCA";
pub const INBOUND_LISTENER: &str = "inbound_mtls";
/// The per-client static cluster of the local app behind the inbound listener.
pub const APP_CLUSTER: &str = "inbound_app";
const TLS_SOCKET: &str = "envoy.transport_sockets.tls";

/// `default`: one identity's certificate chain and key.
pub fn certificate_secret(identity: &Identity) -> Secret {
    let inline = |bytes: &[u8]| DataSource {
        specifier: Some(Specifier::InlineBytes(bytes.to_vec())),
        ..DataSource::default()
    };
    Secret {
        name: CERT_SECRET.to_string(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(&identity.cert_chain)),
            private_key: Some(inline(&identity.key)),
            ..TlsCertificate::default()
        })),
    }
}

/// `ROOTCA`: the trust bundle peers' certificates must chain to.
pub fn root_secret(bundle: &[u8]) -> Secret {
    Secret {
        name: ROOT_SECRET.to_string(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(DataSource {
                    specifier: Some(Specifier::InlineBytes(bundle.to_vec())),
                    ..DataSource::default()
                }),
                ..CertificateValidationContext::default()
            },
        )),
    }
}

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ads_config_source()),
    }
}

/// Our certificate and the peer's validation, both from SDS over ADS. With `peer_identities`, the
/// peer's certificate must also carry one of them as a URI SAN: Envoy merges the inline matchers
/// (`default_validation_context`) with the trust bundle that SDS `ROOTCA` keeps up to date. Without,
/// the validation context is `ROOTCA` alone, so any certificate of the trust bundle is accepted.
fn common_tls_context(peer_identities: &BTreeSet<SpiffeId>) -> CommonTlsContext {
    let validation = if peer_identities.is_empty() {
        ValidationContextType::ValidationContextSdsSecretConfig(sds(ROOT_SECRET))
    } else {
        ValidationContextType::CombinedValidationContext(CombinedCertificateValidationContext {
            default_validation_context: Some(CertificateValidationContext {
                // Sorted (a BTreeSet): the same identities always encode to the same bytes.
                match_typed_subject_alt_names: peer_identities
                    .iter()
                    .map(|id| SubjectAltNameMatcher {
                        san_type: SanType::Uri as i32,
                        matcher: Some(StringMatcher {
                            match_pattern: Some(MatchPattern::Exact(id.as_str().to_string())),
                            ..StringMatcher::default()
                        }),
                        ..SubjectAltNameMatcher::default()
                    })
                    .collect(),
                ..CertificateValidationContext::default()
            }),
            validation_context_sds_secret_config: Some(sds(ROOT_SECRET)),
            ..CombinedCertificateValidationContext::default()
        })
    };
    CommonTlsContext {
        tls_certificate_sds_secret_configs: vec![sds(CERT_SECRET)],
        validation_context_type: Some(validation),
        ..CommonTlsContext::default()
    }
}

/// The client side: a cluster's transport socket that presents our certificate and accepts only
/// servers whose certificate chains to the trust bundle and, when `peer_identities` is not empty,
/// carries one of them (see [`crate::translate::input::ClusterInput::peer_identities`]).
pub fn upstream_transport_socket(peer_identities: &BTreeSet<SpiffeId>) -> TransportSocket {
    TransportSocket {
        name: TLS_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(
            UpstreamTlsContext {
                common_tls_context: Some(common_tls_context(peer_identities)),
                ..UpstreamTlsContext::default()
            },
        ))),
    }
}

/// The server side: a listener on `address:inbound.port` that requires a client certificate chaining to
/// the trust bundle and passes the decrypted bytes to the app (TCP proxy, so any protocol works).
pub fn inbound_listener(address: &str, inbound: Inbound) -> Listener {
    // Any client of the trust bundle: which clients may call is authorization, not naming.
    let tls = DownstreamTlsContext {
        common_tls_context: Some(common_tls_context(&BTreeSet::new())),
        require_client_certificate: Some(BoolValue { value: true }),
        ..DownstreamTlsContext::default()
    };
    let proxy = TcpProxy {
        stat_prefix: INBOUND_LISTENER.to_string(),
        cluster_specifier: Some(ClusterSpecifier::Cluster(APP_CLUSTER.to_string())),
        ..TcpProxy::default()
    };
    Listener {
        name: INBOUND_LISTENER.to_string(),
        address: Some(socket_address(address, inbound.port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.tcp_proxy".to_string(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(proxy))),
            }],
            transport_socket: Some(TransportSocket {
                name: TLS_SOCKET.to_string(),
                config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(tls))),
            }),
            ..FilterChain::default()
        }],
        ..Listener::default()
    }
}

/// The local app behind the inbound listener: a static cluster, so it needs no EDS.
pub fn app_cluster(inbound: Inbound) -> Cluster {
    Cluster {
        name: APP_CLUSTER.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: 1,
            nanos: 0,
        }),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: APP_CLUSTER.to_string(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket_address("127.0.0.1", inbound.app_port)),
                        ..Endpoint::default()
                    })),
                    ..LbEndpoint::default()
                }],
                ..LocalityLbEndpoints::default()
            }],
            ..ClusterLoadAssignment::default()
        }),
        ..Cluster::default()
    }
}

#[cfg(test)]
mod tests;
