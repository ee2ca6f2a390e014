use super::*;
use crate::policy::{FailoverPolicy, MtlsMode};
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use prost::Message;
use std::collections::BTreeSet;

fn sds_names(ctx: &CommonTlsContext) -> (Vec<String>, String) {
    for c in &ctx.tls_certificate_sds_secret_configs {
        assert!(matches!(
            c.sds_config.as_ref().unwrap().config_source_specifier,
            Some(ConfigSourceSpecifier::Ads(_))
        ));
    }
    let Some(ValidationContextType::ValidationContextSdsSecretConfig(v)) =
        &ctx.validation_context_type
    else {
        panic!("validation context from SDS expected")
    };
    (
        ctx.tls_certificate_sds_secret_configs
            .iter()
            .map(|c| c.name.clone())
            .collect(),
        v.name.clone(),
    )
}

fn unpack<M: Message + Default>(ts: &TransportSocket) -> M {
    assert_eq!(ts.name, TLS_SOCKET);
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
        panic!("typed config expected")
    };
    M::decode(any.value.as_slice()).unwrap()
}

fn strict_policy() -> FailoverPolicy {
    FailoverPolicy {
        mtls: MtlsMode::Strict,
        ..FailoverPolicy::default()
    }
}

fn ids(texts: &[&str]) -> BTreeSet<SpiffeId> {
    texts.iter().map(|t| SpiffeId::parse(t).unwrap()).collect()
}

#[test]
fn strict_clusters_present_default_and_verify_against_rootca() {
    let name = "checkout.shop:8080";
    let no_identity = BTreeSet::new();
    let plain = super::super::resources::cluster(name, &FailoverPolicy::default(), &no_identity);
    assert!(plain.transport_socket.is_none(), "DISABLE is plaintext");
    let strict = super::super::resources::cluster(name, &strict_policy(), &no_identity);
    let tls: UpstreamTlsContext = unpack(strict.transport_socket.as_ref().unwrap());
    let (certs, root) = sds_names(tls.common_tls_context.as_ref().unwrap());
    assert_eq!(certs, vec!["default".to_string()]);
    assert_eq!(root, "ROOTCA");
    // Everything else about the cluster is as without mTLS.
    assert_eq!(
        Cluster {
            transport_socket: None,
            ..strict
        },
        plain
    );
}

#[test]
fn inbound_listener_requires_client_certificates_and_forwards_to_the_app() {
    let inbound = Inbound {
        port: 15006,
        app_port: 8080,
    };
    let l = inbound_listener("127.0.0.1", inbound);
    assert_eq!(l.name, INBOUND_LISTENER);
    assert_eq!(l.address, Some(socket_address("127.0.0.1", 15006)));
    let chain = &l.filter_chains[0];
    let tls: DownstreamTlsContext = unpack(chain.transport_socket.as_ref().unwrap());
    assert_eq!(
        tls.require_client_certificate,
        Some(BoolValue { value: true })
    );
    let (certs, root) = sds_names(tls.common_tls_context.as_ref().unwrap());
    assert_eq!(
        (certs, root.as_str()),
        (vec!["default".to_string()], "ROOTCA")
    );
    let Some(filter::ConfigType::TypedConfig(any)) = &chain.filters[0].config_type else {
        panic!()
    };
    let proxy = TcpProxy::decode(any.value.as_slice()).unwrap();
    assert_eq!(
        proxy.cluster_specifier,
        Some(ClusterSpecifier::Cluster(APP_CLUSTER.into()))
    );
    let app = app_cluster(inbound);
    assert_eq!(app.name, APP_CLUSTER);
    let cla = app.load_assignment.unwrap();
    let Some(HostIdentifier::Endpoint(ep)) = &cla.endpoints[0].lb_endpoints[0].host_identifier
    else {
        panic!()
    };
    assert_eq!(ep.address, Some(socket_address("127.0.0.1", 8080)));
}

#[test]
fn secrets_carry_the_pem_inline() {
    let id = Identity {
        spiffe_id: crate::model::SpiffeId::parse("spiffe://td/ns/a/sa/b").unwrap(),
        cert_chain: b"CERT".to_vec(),
        key: b"KEY".to_vec(),
    };
    let s = certificate_secret(&id);
    assert_eq!(s.name, "default");
    let Some(secret::Type::TlsCertificate(t)) = s.r#type else {
        panic!()
    };
    assert_eq!(
        t.private_key.unwrap().specifier,
        Some(Specifier::InlineBytes(b"KEY".to_vec()))
    );
    let r = root_secret(b"CA");
    assert_eq!(r.name, "ROOTCA");
    assert!(matches!(r.r#type, Some(secret::Type::ValidationContext(_))));
}

/// What a cluster of a service without a known identity had before secure naming: the trust
/// bundle from SDS as the whole validation context. Kept byte for byte, so such services' CDS
/// resources do not change (and Envoy does not re-create their clusters) on upgrade.
#[test]
fn without_identities_the_transport_socket_is_exactly_the_trust_bundle_check() {
    let sds = |name: &str| SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(super::super::resources::ads_config_source()),
    };
    let before = TransportSocket {
        name: TLS_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(
            UpstreamTlsContext {
                common_tls_context: Some(CommonTlsContext {
                    tls_certificate_sds_secret_configs: vec![sds("default")],
                    validation_context_type: Some(
                        ValidationContextType::ValidationContextSdsSecretConfig(sds("ROOTCA")),
                    ),
                    ..CommonTlsContext::default()
                }),
                ..UpstreamTlsContext::default()
            },
        ))),
    };
    assert_eq!(
        upstream_transport_socket(&BTreeSet::new()).encode_to_vec(),
        before.encode_to_vec()
    );
}

#[test]
fn known_identities_pin_the_peer_by_uri_san_on_top_of_the_trust_bundle() {
    let peers = ids(&[
        "spiffe://cluster.local/ns/bank/sa/ledger-v2",
        "spiffe://cluster.local/ns/bank/sa/ledger",
    ]);
    let strict = super::super::resources::cluster("ledger.bank:8080", &strict_policy(), &peers);
    let tls: UpstreamTlsContext = unpack(strict.transport_socket.as_ref().unwrap());
    let ctx = tls.common_tls_context.unwrap();
    assert_eq!(
        ctx.tls_certificate_sds_secret_configs
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["default"]
    );
    let Some(ValidationContextType::CombinedValidationContext(combined)) =
        ctx.validation_context_type
    else {
        panic!("a combined validation context expected")
    };
    let root = combined.validation_context_sds_secret_config.unwrap();
    assert_eq!(root.name, "ROOTCA");
    assert!(matches!(
        root.sds_config.unwrap().config_source_specifier,
        Some(ConfigSourceSpecifier::Ads(_))
    ));
    let inline = combined.default_validation_context.unwrap();
    assert_eq!(inline.trusted_ca, None, "the bundle comes from SDS only");
    let matchers: Vec<(i32, Option<MatchPattern>)> = inline
        .match_typed_subject_alt_names
        .into_iter()
        .map(|m| (m.san_type, m.matcher.and_then(|m| m.match_pattern)))
        .collect();
    let exact = |s: &str| {
        (
            SanType::Uri as i32,
            Some(MatchPattern::Exact(s.to_string())),
        )
    };
    assert_eq!(
        matchers,
        [
            exact("spiffe://cluster.local/ns/bank/sa/ledger"),
            exact("spiffe://cluster.local/ns/bank/sa/ledger-v2"),
        ],
        "one exact URI matcher per identity, sorted"
    );
}
