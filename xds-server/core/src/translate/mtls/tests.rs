use super::*;
use crate::policy::{FailoverPolicy, MtlsMode};
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use prost::Message;

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

#[test]
fn strict_clusters_present_default_and_verify_against_rootca() {
    let name = "checkout.shop:8080";
    let plain = super::super::resources::cluster(name, &FailoverPolicy::default());
    assert!(plain.transport_socket.is_none(), "DISABLE is plaintext");
    let strict = super::super::resources::cluster(
        name,
        &FailoverPolicy {
            mtls: MtlsMode::Strict,
            ..FailoverPolicy::default()
        },
    );
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
