//! SDS over real mutual TLS, served as `main` serves it (our accept loop, tonic, the ADS and standalone
//! SDS services): `default` is the certificate whose SPIFFE ID the client's own certificate proves,
//! whatever the client claims or asks for, in StreamSecrets, DeltaSecrets and ADS alike.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity as TlsIdentity};

use xds_core::model::secrets::{Identity, SecretSet};
use xds_core::model::{Registry, SpiffeId};
use xds_core::snapshot::SECRET_TYPE;
use xds_core::testing::{envoy, xds};
use xds_server::grpc::{self, AdsService};
use xds_server::tls::{ReloadingTls, TlsFiles};

const WAIT: Duration = Duration::from_secs(30);

fn spiffe(name: &str) -> SpiffeId {
    SpiffeId::for_service_account("cluster.local", "bank", name).unwrap()
}

/// A CA, the server's certificate for `localhost`, and client certificates.
struct Pki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    dir: std::path::PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
        let dir = std::env::temp_dir().join(format!(
            "xds-sds-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Pki { ca, dir }
    }

    /// (certificate PEM, key PEM) with these SANs.
    fn issue(&self, sans: Vec<rcgen::SanType>) -> (String, String) {
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn workload(&self, name: &str) -> (String, String) {
        let uri = rcgen::SanType::URI(spiffe(name).as_str().try_into().unwrap());
        self.issue(vec![uri])
    }

    fn server_files(&self) -> TlsFiles {
        let (cert, key) = self.issue(vec![rcgen::SanType::DnsName(
            "localhost".try_into().unwrap(),
        )]);
        let write = |name: &str, text: &str| {
            let path = self.dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        TlsFiles {
            cert: write("server.crt", &cert),
            key: write("server.key", &key),
            client_ca: Some(write("ca.crt", &self.ca.pem())),
        }
    }

    /// A TLS channel presenting `client` (none: no client certificate).
    async fn channel(&self, addr: SocketAddr, client: Option<(String, String)>) -> Channel {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.ca.pem()))
            .domain_name("localhost");
        if let Some((cert, key)) = client {
            tls = tls.identity(TlsIdentity::from_pem(cert, key));
        }
        Channel::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap()
    }
}

/// The xDS port over mutual TLS with identities alpha and beta (placeholder contents: the chain is
/// the identity's name) and a trust bundle.
async fn serve(pki: &Pki) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let secrets = SecretSet {
        trust_bundle: Some(b"bundle".to_vec()),
        identities: ["alpha", "beta"]
            .into_iter()
            .map(|name| {
                let id = Identity {
                    spiffe_id: spiffe(name),
                    cert_chain: format!("{name}-cert").into_bytes(),
                    key: format!("{name}-key").into_bytes(),
                };
                (name.to_string(), id)
            })
            .collect(),
    };
    let snapshot =
        xds::snapshot(None, Arc::new(Registry::default())).with_secrets(Arc::new(secrets));
    let (_tx, rx) = watch::channel(Some(Arc::new(snapshot)));
    let tls = ReloadingTls::load(pki.server_files()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ads = AdsService::new(rx);
    let task = tokio::spawn(async move {
        let _keep = _tx;
        grpc::transport()
            .add_service(ads.clone().into_sds_server())
            .add_service(ads.into_server())
            .serve_with_incoming(xds_server::tls::incoming(listener, Some(tls), "xds"))
            .await
            .unwrap();
    });
    (addr, task)
}

/// A node claiming `identity` in its metadata (None: no claim).
fn node(claim: Option<&str>) -> Node {
    match claim {
        Some(identity) => xds::sidecar(Node::default(), identity),
        None => Node {
            id: "plain".into(),
            ..Node::default()
        },
    }
}

/// (name, certificate chain or trusted CA) of each secret.
fn contents(resources: impl IntoIterator<Item = Vec<u8>>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = resources
        .into_iter()
        .map(|bytes| envoy::secret(&bytes))
        .collect();
    out.sort();
    out
}

/// The first answer (or the refusal) of a StreamSecrets (`ads: false`) or ADS stream.
async fn sotw(
    channel: &Channel,
    ads: bool,
    req: DiscoveryRequest,
) -> Result<Vec<(String, String)>, tonic::Status> {
    let (tx, rx) = mpsc::channel(4);
    tx.send(req).await.unwrap();
    let answers = if ads {
        AggregatedDiscoveryServiceClient::new(channel.clone())
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
    } else {
        SecretDiscoveryServiceClient::new(channel.clone())
            .stream_secrets(ReceiverStream::new(rx))
            .await
    };
    let first = tokio::time::timeout(WAIT, answers?.into_inner().message())
        .await
        .expect("an answer in time")?
        .expect("an answer, not the end of the stream");
    assert_eq!(first.type_url, SECRET_TYPE);
    drop(tx);
    Ok(contents(first.resources.into_iter().map(|a| a.value)))
}

/// The same over DeltaSecrets or Delta ADS.
async fn delta(
    channel: &Channel,
    ads: bool,
    req: DeltaDiscoveryRequest,
) -> Result<Vec<(String, String)>, tonic::Status> {
    let (tx, rx) = mpsc::channel(4);
    tx.send(req).await.unwrap();
    let answers = if ads {
        AggregatedDiscoveryServiceClient::new(channel.clone())
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
    } else {
        SecretDiscoveryServiceClient::new(channel.clone())
            .delta_secrets(ReceiverStream::new(rx))
            .await
    };
    let first = tokio::time::timeout(WAIT, answers?.into_inner().message())
        .await
        .expect("an answer in time")?
        .expect("an answer, not the end of the stream");
    drop(tx);
    Ok(contents(
        first
            .resources
            .into_iter()
            .map(|r| r.resource.unwrap().value),
    ))
}

fn pair(name: &str, value: &str) -> (String, String) {
    (name.to_string(), value.to_string())
}

#[tokio::test]
async fn alpha_gets_alphas_key_and_never_betas_in_every_protocol() {
    let pki = Pki::new();
    let (addr, task) = serve(&pki).await;
    let alpha = pki.channel(addr, Some(pki.workload("alpha"))).await;
    let names = ["default", "ROOTCA", "beta"];
    for ads in [false, true] {
        let how = if ads { "ADS" } else { "SDS" };
        // Proven alpha, no claim or the right one: alpha's certificate; asking for `beta` by name
        // gets nothing for it.
        for claim in [None, Some("alpha"), Some(spiffe("alpha").as_str())] {
            let req = xds::request(node(claim), SECRET_TYPE, &names, "", "");
            assert_eq!(
                sotw(&alpha, ads, req).await.unwrap(),
                vec![pair("ROOTCA", "bundle"), pair("default", "alpha-cert")],
                "{how} SotW, claim {claim:?}"
            );
            let req = xds::delta_request(node(claim), SECRET_TYPE, &names, &[], "");
            assert_eq!(
                delta(&alpha, ads, req).await.unwrap(),
                vec![pair("ROOTCA", "bundle"), pair("default", "alpha-cert")],
                "{how} Delta, claim {claim:?}"
            );
        }
        // Claiming beta (by name or SPIFFE ID): PERMISSION_DENIED naming both.
        for claim in ["beta", spiffe("beta").as_str()] {
            let req = xds::request(node(Some(claim)), SECRET_TYPE, &names, "", "");
            let refused = sotw(&alpha, ads, req).await.unwrap_err();
            assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{how} SotW");
            assert!(
                refused.message().contains(claim)
                    && refused.message().contains(spiffe("alpha").as_str()),
                "{}",
                refused.message()
            );
            let req = xds::delta_request(node(Some(claim)), SECRET_TYPE, &names, &[], "");
            let refused = delta(&alpha, ads, req).await.unwrap_err();
            assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{how} Delta");
        }
    }
    task.abort();
}

#[tokio::test]
async fn a_client_that_proves_no_identity_gets_the_trust_bundle_only() {
    let pki = Pki::new();
    let (addr, task) = serve(&pki).await;
    // A valid certificate of the client CA, but no SPIFFE ID in it (an operator's, say), and one
    // with a URI SAN that is not a SPIFFE ID.
    let dns_only = pki.issue(vec![rcgen::SanType::DnsName(
        "ops.test".try_into().unwrap(),
    )]);
    let not_spiffe = pki.issue(vec![rcgen::SanType::URI(
        "https://beta.bank/".try_into().unwrap(),
    )]);
    for client in [dns_only, not_spiffe] {
        let channel = pki.channel(addr, Some(client)).await;
        let names = ["default", "ROOTCA"];
        let req = xds::request(node(None), SECRET_TYPE, &names, "", "");
        assert_eq!(
            sotw(&channel, false, req).await.unwrap(),
            vec![pair("ROOTCA", "bundle")]
        );
        let req = xds::delta_request(node(None), SECRET_TYPE, &names, &[], "");
        assert_eq!(
            delta(&channel, true, req).await.unwrap(),
            vec![pair("ROOTCA", "bundle")]
        );
        // Claiming an identity without proving one is refused.
        let req = xds::request(node(Some("beta")), SECRET_TYPE, &names, "", "");
        let refused = sotw(&channel, true, req).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(
            refused.message().contains("no identity"),
            "{}",
            refused.message()
        );
    }
    task.abort();
}
