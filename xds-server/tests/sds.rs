//! The standalone SDS service (`envoy.service.secret.v3.SecretDiscoveryService`) on the xDS port,
//! served as `main` serves it, answers StreamSecrets and DeltaSecrets from the same snapshots and state
//! machines as ADS, with the client's identity deciding `default`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{secret, Secret};
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use xds_core::model::secrets::{Identity, SecretSet};
use xds_core::model::Registry;
use xds_core::snapshot::{Snapshot, TranslateSettings, SECRET_TYPE};
use xds_server::grpc::{self, AdsService};

const WAIT: Duration = Duration::from_secs(30);

async fn serve() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let secrets = SecretSet {
        trust_bundle: Some(b"bundle".to_vec()),
        identities: [("web", "web-cert"), ("db", "db-cert")]
            .into_iter()
            .map(|(name, cert)| {
                let id = Identity {
                    cert_chain: cert.as_bytes().to_vec(),
                    key: b"key".to_vec(),
                };
                (name.to_string(), id)
            })
            .collect(),
    };
    let snapshot = Snapshot::build(
        None,
        Arc::new(Registry::default()),
        Arc::default(),
        TranslateSettings::default(),
    )
    .with_secrets(Arc::new(secrets));
    let (_tx, rx) = watch::channel(Some(Arc::new(snapshot)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ads = AdsService::new(rx);
    let task = tokio::spawn(async move {
        let _keep = _tx;
        grpc::transport()
            .add_service(ads.clone().into_sds_server())
            .add_service(ads.into_server())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (addr, task)
}

fn node(identity: &str) -> Node {
    Node {
        id: format!("sidecar-{identity}"),
        metadata: Some(Struct {
            fields: [(
                "identity".to_string(),
                Value {
                    kind: Some(Kind::StringValue(identity.into())),
                },
            )]
            .into_iter()
            .collect(),
        }),
        ..Node::default()
    }
}

/// (name, certificate chain or trusted CA) of each secret.
fn contents(resources: impl IntoIterator<Item = Vec<u8>>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = resources
        .into_iter()
        .map(|bytes| {
            let s = Secret::decode(bytes.as_slice()).unwrap();
            let source = match s.r#type.unwrap() {
                secret::Type::TlsCertificate(t) => t.certificate_chain.unwrap(),
                secret::Type::ValidationContext(v) => v.trusted_ca.unwrap(),
                other => panic!("unexpected {other:?}"),
            };
            let Some(Specifier::InlineBytes(b)) = source.specifier else {
                panic!("inline bytes expected")
            };
            (s.name, String::from_utf8(b).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn stream_and_delta_secrets_answer_per_identity() {
    let (addr, task) = serve().await;
    let mut client = SecretDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    let (tx, rx) = mpsc::channel(4);
    tx.send(DiscoveryRequest {
        node: Some(node("web")),
        type_url: SECRET_TYPE.into(),
        resource_names: vec!["default".into(), "ROOTCA".into()],
        ..DiscoveryRequest::default()
    })
    .await
    .unwrap();
    let mut answers = client
        .stream_secrets(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(WAIT, answers.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.type_url, SECRET_TYPE);
    assert_eq!(
        contents(first.resources.into_iter().map(|a| a.value)),
        vec![
            ("ROOTCA".to_string(), "bundle".to_string()),
            ("default".to_string(), "web-cert".to_string())
        ]
    );

    let (tx, rx) = mpsc::channel(4);
    tx.send(DeltaDiscoveryRequest {
        node: Some(node("db")),
        type_url: SECRET_TYPE.into(),
        resource_names_subscribe: vec!["default".into()],
        ..DeltaDiscoveryRequest::default()
    })
    .await
    .unwrap();
    let mut answers = client
        .delta_secrets(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(WAIT, answers.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        contents(
            first
                .resources
                .into_iter()
                .map(|r| r.resource.unwrap().value)
        ),
        vec![("default".to_string(), "db-cert".to_string())]
    );
    task.abort();
}
