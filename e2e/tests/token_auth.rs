//! Token authentication (`--token-auth`): xDS streams carrying `authorization: Bearer TOKEN` are
//! checked with the Kubernetes TokenReview API, through the real server binary, the real `kube`
//! client and the test API server's TokenReview endpoint (`e2e::apiserver::token_review`).
//!
//! - a valid ServiceAccount token is served, and SDS `default` is the certificate whose URI SAN is the
//!   token's SPIFFE ID; a stream without a token gets only `ROOTCA`;
//! - a token for another audience, an expired, a garbage and a non-ServiceAccount token are refused
//!   with UNAUTHENTICATED naming the reason;
//! - a TokenReview endpoint answering 500 or 503, or never answering, refuses the stream with
//!   UNAVAILABLE (fail closed), and the same token works once the endpoint does again;
//! - verdicts are cached: two streams with one token cost one TokenReview;
//! - a real Envoy started from `deploy/envoy/sidecar-bootstrap-token.yaml` connects with its token
//!   file, gets its key over SDS, and after a rotation of the file reconnects with the new token;
//! - `--token-auth` without the Kubernetes source stops the server at startup.
//!
//! The verifier itself is also driven directly against the test API server (no server binary), so
//! its TokenReview semantics are covered whatever the stream side does.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use e2e::apiserver::{ApiServer, KindInfo, TokenReviewFault};
use e2e::envoy::{Envoy, EnvoyOptions, XdsProtocol, XdsToken};
use e2e::pki::{Ca, Leaf, LeafFiles};
use e2e::server::{ServerArgs, XdsServer};
use e2e::tmp::TempDir;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::{Code, Status};
use xds_core::model::SpiffeId;
use xds_core::snapshot::SECRET_TYPE;
use xds_core::testing::{envoy, xds};
use xds_server::auth::token_review::{TokenReviewSettings, TokenReviewVerifier};
use xds_server::auth::workload::{TokenRejected, TokenVerifier};

use crate::kube_client::client;

const AUDIENCE: &str = "xds-server";
const LEDGER: &str = "spiffe://cluster.local/ns/bank/sa/ledger";
const LEDGER_USER: &str = "system:serviceaccount:bank:ledger";
const WAIT: Duration = Duration::from_secs(30);

fn in_an_hour() -> SystemTime {
    SystemTime::now() + Duration::from_secs(3600)
}

/// The test API server, the secrets directory (identities `ledger` and `teller` with SPIFFE IDs, the
/// CA as ROOTCA) and the server's TLS certificate, before any server runs.
struct Scene {
    api: ApiServer,
    dir: TempDir,
    kubeconfig: PathBuf,
    secrets: PathBuf,
    /// The CA's certificate file (trusted by clients of the server's TLS port).
    ca_path: PathBuf,
    server_tls: LeafFiles,
    ledger: Leaf,
}

impl Scene {
    fn new() -> Scene {
        let api = ApiServer::start();
        api.register_kind(KindInfo::failover_policy());
        let dir = TempDir::new("token-auth");
        let kubeconfig = dir.join("kubeconfig");
        api.write_kubeconfig(&kubeconfig);
        let ca = Ca::new("mesh CA");
        let secrets = dir.join("secrets");
        std::fs::create_dir_all(&secrets).unwrap();
        ca.write(&secrets.join("ca.crt"));
        let ledger = ca.workload("ledger", LEDGER);
        let teller = ca.workload("teller", "spiffe://cluster.local/ns/bank/sa/teller");
        for (name, leaf) in [("ledger", &ledger), ("teller", &teller)] {
            let id_dir = secrets.join(name);
            std::fs::create_dir_all(&id_dir).unwrap();
            std::fs::write(id_dir.join("tls.crt"), &leaf.cert_pem).unwrap();
            std::fs::write(id_dir.join("tls.key"), &leaf.key_pem).unwrap();
        }
        api.add_token("ledger-token", LEDGER_USER, &[AUDIENCE], in_an_hour());
        let ca_path = dir.join("ca.crt");
        ca.write(&ca_path);
        // For 127.0.0.1 and localhost.
        let server_tls = ca.server("xds-server", &[]).write(dir.path(), "server");
        Scene {
            api,
            dir,
            kubeconfig,
            secrets,
            ca_path,
            server_tls,
            ledger,
        }
    }

    /// The server with `--token-auth`, TLS (no client certificates) and the secrets directory.
    fn server(&self) -> XdsServer {
        let mut args = ServerArgs::kubernetes(&self.kubeconfig);
        args.extra = vec![
            "--token-auth".into(),
            "--secrets-dir".into(),
            self.secrets.display().to_string(),
            "--tls-cert".into(),
            self.server_tls.cert.display().to_string(),
            "--tls-key".into(),
            self.server_tls.key.display().to_string(),
        ];
        XdsServer::start(args)
    }

    /// An xDS client connection over TLS, trusting the scene's CA.
    async fn channel(&self, addr: SocketAddr) -> Channel {
        let ca = std::fs::read_to_string(&self.ca_path).unwrap();
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name("localhost");
        Channel::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .expect("connect to the xDS port over TLS")
    }
}

/// Opens an ADS stream (with `authorization: Bearer TOKEN` if given) asking SDS for `default` and
/// `ROOTCA`, and returns the first answer's secrets as (name, certificate or CA PEM), or the status
/// the stream was refused with (at open or as its first message).
async fn first_sds_answer(
    scene: &Scene,
    addr: SocketAddr,
    token: Option<&str>,
) -> Result<Vec<(String, String)>, Status> {
    let mut client = AggregatedDiscoveryServiceClient::new(scene.channel(addr).await);
    let (tx, rx) = mpsc::channel(4);
    tx.send(xds::request(
        xds::node("token-client", "bank"),
        SECRET_TYPE,
        &["default", "ROOTCA"],
        "",
        "",
    ))
    .await
    .unwrap();
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ASCII token"),
        );
    }
    let answer = tokio::time::timeout(WAIT, async {
        let mut stream = client
            .stream_aggregated_resources(request)
            .await?
            .into_inner();
        stream
            .message()
            .await?
            .ok_or_else(|| Status::unknown("the stream ended without an answer"))
    })
    .await
    .expect("no answer and no refusal within 30 s");
    drop(tx);
    answer.map(|r: DiscoveryResponse| {
        let mut secrets: Vec<(String, String)> = r
            .resources
            .iter()
            .map(|any| envoy::secret(&any.value))
            .collect();
        secrets.sort();
        secrets
    })
}

fn refused(result: Result<Vec<(String, String)>, Status>, code: Code, reason: &str, what: &str) {
    match result {
        Err(status) => {
            assert_eq!(status.code(), code, "{what}: {status:?}");
            assert!(
                status.message().contains(reason),
                "{what}: the refusal should say {reason:?}: {:?}",
                status.message()
            );
        }
        Ok(secrets) => panic!("{what}: served {secrets:?}, expected {code:?}"),
    }
}

fn names(secrets: &[(String, String)]) -> Vec<&str> {
    secrets.iter().map(|(n, _)| n.as_str()).collect()
}

/// (a) and (b): a valid token is served its workload's key; no token gets only ROOTCA; each invalid
/// token is refused with UNAUTHENTICATED and the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_gets_its_workloads_key_and_invalid_tokens_are_refused_with_the_reason() {
    let scene = Scene::new();
    let server = scene.server();
    let api = &scene.api;
    api.add_token("other-audience", LEDGER_USER, &["vault"], in_an_hour());
    api.add_token("expired", LEDGER_USER, &[AUDIENCE], in_an_hour());
    api.expire_token("expired");
    api.add_token("alice", "alice@example.com", &[AUDIENCE], in_an_hour());
    api.add_token("node", "system:node:worker-1", &[AUDIENCE], in_an_hour());

    let served = first_sds_answer(&scene, server.addr(), Some("ledger-token")).await;
    let served = served.unwrap_or_else(|s| {
        panic!(
            "valid token refused: {s:?}\n{}",
            e2e::tail(&server.log(), 30)
        )
    });
    assert_eq!(names(&served), vec!["ROOTCA", "default"], "{served:?}");
    assert_eq!(
        served[1].1, scene.ledger.cert_pem,
        "SDS default is the certificate of the token's SPIFFE ID {LEDGER}"
    );
    let anonymous = first_sds_answer(&scene, server.addr(), None).await.unwrap();
    assert_eq!(
        names(&anonymous),
        vec!["ROOTCA"],
        "no proven identity, no private key"
    );

    let cases = [
        ("other-audience", "vault", "a token for another audience"),
        ("expired", "expired", "an expired token"),
        (
            "garbage.not-a-jwt",
            "invalid bearer token",
            "a garbage token",
        ),
        (
            "alice",
            "`alice@example.com`, which is not a ServiceAccount",
            "a person's token",
        ),
        (
            "node",
            "`system:node:worker-1`, which is not a ServiceAccount",
            "a node's token",
        ),
    ];
    for (token, reason, what) in cases {
        refused(
            first_sds_answer(&scene, server.addr(), Some(token)).await,
            Code::Unauthenticated,
            reason,
            what,
        );
    }
    // The tokens never show in the server's log.
    let log = server.log();
    for token in ["ledger-token", "garbage.not-a-jwt"] {
        assert!(
            !log.contains(token),
            "the server logged the token {token:?}"
        );
    }
}

/// (c): the TokenReview endpoint failing (500, 503) or frozen refuses streams with UNAVAILABLE, and
/// they are served as soon as it works again (failures are never cached).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_frozen_token_review_refuses_streams_and_recovers() {
    let scene = Scene::new();
    let server = scene.server();
    let api = &scene.api;
    for fault in [
        TokenReviewFault::Status(500),
        TokenReviewFault::Status(503),
        TokenReviewFault::Frozen,
    ] {
        api.set_token_review_fault(Some(fault));
        let started = Instant::now();
        let result = first_sds_answer(&scene, server.addr(), Some("ledger-token")).await;
        let took = started.elapsed();
        println!("{fault:?}: refused after {took:?}");
        refused(
            result,
            Code::Unavailable,
            "cannot verify the token with the Kubernetes TokenReview API",
            &format!("{fault:?}"),
        );
        if fault != TokenReviewFault::Status(500) {
            // kube retries 503 itself; a frozen endpoint never answers: the 5 s timeout decides.
            assert!(
                took >= Duration::from_millis(4500),
                "{fault:?} refused after {took:?}"
            );
        }
        assert!(
            took < Duration::from_secs(15),
            "{fault:?} refused after {took:?}"
        );
    }
    api.set_token_review_fault(None);
    let served = first_sds_answer(&scene, server.addr(), Some("ledger-token")).await;
    let served = served.unwrap_or_else(|s| panic!("refused after recovery: {s:?}"));
    assert_eq!(names(&served), vec!["ROOTCA", "default"], "after recovery");
}

/// (d): a verdict is reused: two streams with one token cost one TokenReview, and so do two with one
/// refused token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_streams_with_one_token_cost_one_token_review() {
    let scene = Scene::new();
    let server = scene.server();
    let api = &scene.api;
    let before = api.token_reviews_received();
    for _ in 0..2 {
        assert!(
            first_sds_answer(&scene, server.addr(), Some("ledger-token"))
                .await
                .is_ok()
        );
    }
    assert_eq!(
        api.token_reviews_received() - before,
        1,
        "valid token: one review"
    );
    for _ in 0..2 {
        refused(
            first_sds_answer(&scene, server.addr(), Some("garbage")).await,
            Code::Unauthenticated,
            "invalid bearer token",
            "garbage",
        );
    }
    assert_eq!(
        api.token_reviews_received() - before,
        2,
        "refused token: one review"
    );
}

e2e::both_protocols!(envoy_with_the_token_bootstrap_gets_its_key_and_follows_a_rotated_token);

/// (e): a real Envoy from the token sample bootstrap (Google gRPC over TLS, the token file as call
/// credentials) is authenticated as its ServiceAccount: its inbound mTLS listener opens once SDS has
/// sent `default` (the certificate of that SPIFFE ID), which Envoy's `/certs` shows. Then the token is
/// rotated (the file replaced, the old token revoked) and the server restarted: Envoy's new stream
/// carries the new token and is served.
fn envoy_with_the_token_bootstrap_gets_its_key_and_follows_a_rotated_token(protocol: XdsProtocol) {
    let scene = Scene::new();
    let mut server = scene.server();
    let token_file = scene.dir.join("token");
    write_token(&token_file, "ledger-token");
    let inbound_port = e2e::ports::free_port();
    let app_port = e2e::ports::free_port();
    // No Service, so no outbound listener for `Envoy::start` to wait for: the inbound one is the sign.
    let envoy = Envoy::spawn(
        EnvoyOptions::new("token-sidecar", "us-east1", "us-east1-b", server.addr())
            .protocol(protocol)
            .metadata("inbound_port", &inbound_port.to_string())
            .metadata("app_port", &app_port.to_string())
            .xds_token(XdsToken {
                ca: scene.ca_path.clone(),
                token_file: token_file.clone(),
            }),
    );
    let opened = e2e::poll(WAIT, Duration::from_millis(50), || {
        e2e::ports::is_listening(inbound_port).then_some(())
    });
    assert!(
        opened.is_some(),
        "the inbound mTLS listener never opened (no `default` over SDS); server log:\n{}",
        e2e::tail(&server.log(), 30)
    );
    envoy.verify_protocol();
    let certs = envoy.admin_get("/certs").unwrap();
    assert!(
        certs.contains(LEDGER),
        "Envoy's /certs lack {LEDGER}: {certs}"
    );
    // The load-report stream (`cluster_manager.load_stats_config`) is a stream of its own, opened
    // with the same Google gRPC settings: the server answered it.
    let reporting = e2e::poll(WAIT, Duration::from_millis(100), || {
        (envoy.stat_u64("load_reporter.responses").unwrap_or(0) > 0).then_some(())
    });
    assert!(
        reporting.is_some(),
        "the load-report stream was never answered: {:?}",
        envoy.stats("load_reporter")
    );
    // And it carries the token: with a garbage token in the file, the server refuses Envoy's next
    // load-report stream (UNAUTHENTICATED, 16) as it refuses its next ADS stream.
    write_token(&token_file, "garbage");
    server.kill();
    server.restart();
    let refused = e2e::poll(WAIT, Duration::from_millis(100), || {
        envoy
            .log()
            .lines()
            .any(|l| l.contains("StreamLoadStats gRPC config stream closed: 16"))
            .then_some(())
    });
    assert!(
        refused.is_some(),
        "the load-report stream with a garbage token was not refused as unauthenticated; Envoy's log:\n{}",
        e2e::tail(&envoy.log(), 30)
    );

    // Rotation: kubelet replaces the file; the old token stops being valid.
    scene
        .api
        .add_token("ledger-token-2", LEDGER_USER, &[AUDIENCE], in_an_hour());
    write_token(&token_file, "ledger-token-2");
    scene.api.revoke_token("ledger-token");
    let reviews = scene.api.token_reviews_received();
    let connected = server.log_lines_with("Envoy connected").len();
    server.kill();
    server.restart();
    let reconnected = e2e::poll(WAIT, Duration::from_millis(100), || {
        (server.log_lines_with("Envoy connected").len() > connected).then_some(())
    });
    assert!(
        reconnected.is_some(),
        "Envoy did not reconnect with the rotated token; server log:\n{}",
        e2e::tail(&server.log(), 30)
    );
    // The restarted server's cache is empty: it asked, and the revoked token would have been refused.
    assert!(scene.api.token_reviews_received() > reviews);
}

/// A token file as kubelet writes it: the token alone, no newline (Envoy would send the newline and
/// gRPC would fail every stream), replaced atomically.
fn write_token(path: &Path, token: &str) {
    e2e::pki::write_atomic(path, token);
}

/// (f): `--token-auth` needs the Kubernetes source.
#[test]
fn token_auth_without_the_kubernetes_source_stops_the_server_at_startup() {
    let endpoints = e2e::paths::workspace_root().join("deploy/local/endpoints.yaml");
    let (status, log) = XdsServer::run_expecting_exit(
        &["--endpoints", endpoints.to_str().unwrap(), "--token-auth"],
        Duration::from_secs(20),
    );
    let status =
        status.expect("the server kept running with --token-auth and no Kubernetes source");
    assert!(!status.success(), "exit status {status}");
    assert!(
        log.contains("--token-auth needs the Kubernetes source"),
        "the error should name the flag and what it needs: {log}"
    );
}

/// Token authentication does not make secrets servable in clear text: with secrets and without
/// `--tls-cert` the server refuses to start (before it even reads the kubeconfig).
#[test]
fn token_auth_with_secrets_needs_tls() {
    let scene = Scene::new();
    let kubeconfig = scene.kubeconfig.display().to_string();
    let secrets = scene.secrets.display().to_string();
    let (status, log) = XdsServer::run_expecting_exit(
        &[
            "--source",
            "kubernetes",
            "--kubeconfig",
            &kubeconfig,
            "--token-auth",
            "--secrets-dir",
            &secrets,
        ],
        Duration::from_secs(20),
    );
    let status = status.expect("the server kept running with secrets, tokens and no TLS");
    assert!(!status.success(), "exit status {status}");
    assert!(
        log.contains("--tls-cert, --tls-key and --token-auth"),
        "the error should say what to set: {log}"
    );
}

/// The token sample is the plain sample with the ADS and load-report `grpc_services` entries replaced
/// by Google gRPC (TLS, the token file as call credentials; the same entry for both streams) and no
/// static `xds_cluster`, so the two cannot drift.
#[test]
fn the_token_sample_is_the_plain_sample_with_google_grpc_and_call_credentials() {
    let load = |p: PathBuf| -> serde_yaml_ng::Value {
        serde_yaml_ng::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
    };
    let mut plain = load(e2e::paths::sample_bootstrap());
    let mut token = load(e2e::paths::sample_token_bootstrap());
    let grpc = |doc: &mut serde_yaml_ng::Value| {
        doc["dynamic_resources"]["ads_config"]
            .as_mapping_mut()
            .unwrap()
            .remove("grpc_services")
            .unwrap()
    };
    let load_reports = |doc: &mut serde_yaml_ng::Value| {
        doc["cluster_manager"]["load_stats_config"]
            .as_mapping_mut()
            .unwrap()
            .remove("grpc_services")
            .unwrap()
    };
    let google = grpc(&mut token)[0]["google_grpc"].clone();
    let load_reports_google = load_reports(&mut token)[0]["google_grpc"].clone();
    assert_eq!(
        load_reports_google, google,
        "the load-report stream must reach the server exactly as ADS does, token included"
    );
    grpc(&mut plain);
    load_reports(&mut plain);
    plain.as_mapping_mut().unwrap().remove("static_resources");
    assert_eq!(token, plain);
    assert_eq!(
        google["credentials_factory_name"],
        "envoy.grpc_credentials.file_based_metadata"
    );
    let plugin = &google["call_credentials"][0]["from_plugin"];
    assert_eq!(plugin["name"], "envoy.grpc_credentials.file_based_metadata");
    assert_eq!(plugin["typed_config"]["header_key"], "authorization");
    assert_eq!(plugin["typed_config"]["header_prefix"], "Bearer ");
    assert!(google["channel_credentials"]["ssl_credentials"]["root_certs"]["filename"].is_string());
    assert_eq!(
        google["target_uri"],
        "xds-server.xds-system.svc.cluster.local:18000"
    );
}

/// The verifier alone against the test API server, through the real kube client: every verdict,
/// fail closed with a short timeout, and the cache.
#[tokio::test]
async fn the_verifier_reads_token_reviews_from_the_api_server() {
    let api = ApiServer::start();
    let kube = client(&api).await;
    let settings = TokenReviewSettings {
        timeout: Duration::from_secs(1),
        ..TokenReviewSettings::new(AUDIENCE, "cluster.local")
    };
    let verifier: Arc<dyn TokenVerifier> = Arc::new(TokenReviewVerifier::new(kube, settings));
    api.add_token("ok", LEDGER_USER, &["vault", AUDIENCE], in_an_hour());
    api.add_token("vault-only", LEDGER_USER, &["vault"], in_an_hour());
    api.add_token("bob", "bob", &[AUDIENCE], in_an_hour());
    assert_eq!(
        verifier.verify("ok").await,
        Ok(SpiffeId::parse(LEDGER).unwrap())
    );
    let invalid = |token: &'static str, reason: &'static str| {
        let verifier = verifier.clone();
        async move {
            match verifier.verify(token).await {
                Err(TokenRejected::Invalid(e)) => assert!(e.contains(reason), "{token}: {e}"),
                other => panic!("{token}: {other:?}"),
            }
        }
    };
    invalid("vault-only", "is invalid for the target audiences").await;
    invalid("unknown", "invalid bearer token").await;
    assert_eq!(
        verifier.verify("bob").await,
        Err(TokenRejected::NotServiceAccount("bob".into()))
    );
    // The review carried the audience; the answer was read from the real HTTP exchange.
    let reviews = api
        .requests()
        .into_iter()
        .filter(|r| r.path == "/apis/authentication.k8s.io/v1/tokenreviews")
        .count();
    assert_eq!(reviews as u64, api.token_reviews_received());
    assert_eq!(reviews, 4);

    // Fail closed, never cached.
    api.add_token("new", LEDGER_USER, &[AUDIENCE], in_an_hour());
    api.set_token_review_fault(Some(TokenReviewFault::Status(500)));
    assert!(matches!(
        verifier.verify("new").await,
        Err(TokenRejected::Unavailable(_))
    ));
    api.set_token_review_fault(Some(TokenReviewFault::Frozen));
    let started = Instant::now();
    assert!(matches!(
        verifier.verify("new").await,
        Err(TokenRejected::Unavailable(e)) if e.contains("no answer")
    ));
    assert!(started.elapsed() >= Duration::from_millis(900));
    api.set_token_review_fault(None);
    assert_eq!(
        verifier.verify("new").await,
        Ok(SpiffeId::parse(LEDGER).unwrap())
    );

    // Cached: revoked and expired at the API server, still valid here for the positive TTL.
    let count = api.token_reviews_received();
    api.revoke_token("ok");
    assert_eq!(
        verifier.verify("ok").await,
        Ok(SpiffeId::parse(LEDGER).unwrap())
    );
    invalid("unknown", "invalid bearer token").await;
    assert_eq!(
        api.token_reviews_received(),
        count,
        "both verdicts came from the cache"
    );
}
