//! The xDS gRPC services (ADS and standalone SDS): tonic plumbing around the per-stream loop
//! ([`stream`]), which feeds each stream's protocol machine ([`AdsConnection`] for SotW,
//! [`DeltaConnection`] for Delta, both in [`xds_core::protocol`]) with requests and snapshots and sends
//! what it answers. Protocol refusals ([`ProtocolError`]) become gRPC statuses in one place, [`status`].

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use futures::Stream;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::auth::workload::{authenticate, ConnInfo, TokenVerifier};
use crate::registry::ClientRegistry;
use xds_core::model::{LocalityLookup, PeerIdentity};
use xds_core::protocol::delta::DeltaConnection;
use xds_core::protocol::error::{GrpcCode, ProtocolError};
use xds_core::protocol::sotw::{AdsConnection, SotwRequest};
use xds_core::protocol::wire::{DeltaResponse, SotwResponse};
use xds_core::snapshot::Snapshot;

/// The limits a stream is held to (defined with the protocol, in [`xds_core::protocol::limits`]).
pub use xds_core::protocol::limits::{
    MAX_IDENTITY_BYTES, MAX_LABEL_KEY_BYTES, MAX_LABEL_VALUE_BYTES, MAX_LOCALITY_BYTES,
    MAX_METADATA_VALUE_BYTES, MAX_NAMES_PER_TYPE, MAX_NAME_BYTES_PER_TYPE, MAX_NODE_ID_BYTES,
    MAX_NODE_LABELS, MAX_REQUEST_BYTES, MAX_RESOURCE_NAME_BYTES, MAX_RESPONSES_PER_EVENT,
};

mod body;
use body::RequestStream;
mod stream;
pub mod transport;

pub use transport::{Transport, TransportSettings};

pub mod lrs;
mod sweep;

pub use sweep::CacheSweep;

/// The snapshot stream the server reads. `None` until the sources have a complete view: streams opened
/// before that wait (Envoy waits with them) rather than get an empty or partial configuration.
pub type Snapshots = watch::Receiver<Option<Arc<Snapshot>>>;

/// The gRPC transport the xDS port runs on, with the default [`TransportSettings`]; `main` serves
/// through the same type with the flags' settings.
pub fn transport() -> Transport {
    Transport::new(TransportSettings::default())
}

/// Counters shared by all streams of one [`AdsService`].
#[derive(Default)]
struct Counters {
    opened: AtomicU64,
    live: AtomicUsize,
    snapshots_skipped: AtomicU64,
    max_held: AtomicUsize,
}

/// What the ADS streams of one service are doing, for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Streams opened since start.
    pub opened: u64,
    /// Streams open: their loop has not ended (nor been dropped with its connection).
    pub live: usize,
    /// Snapshots a stream never computed an answer from because a newer one replaced it while the
    /// stream waited for its client (latest state wins).
    pub snapshots_skipped: u64,
    /// The most responses any stream's loop has held at once (one input's answer, sent as the client
    /// takes it).
    pub max_held_responses: usize,
}

#[derive(Clone)]
pub struct AdsService {
    snapshots: Snapshots,
    next_stream_id: Arc<AtomicU64>,
    lookup: Option<Arc<dyn LocalityLookup>>,
    /// Changes whenever `lookup` may answer differently (a pod appeared, say): a stream whose client
    /// waits for its pod looks again then. Without it, only the client's next request or the next
    /// snapshot does.
    lookup_changes: Option<tokio::sync::watch::Receiver<u64>>,
    counters: Arc<Counters>,
    clients: Arc<ClientRegistry>,
    /// Verifies `authorization: Bearer` ServiceAccount tokens (token authentication); `None`: off.
    tokens: Option<Arc<dyn TokenVerifier>>,
    /// How long a stream may wait for its client's first request.
    first_request_timeout: Duration,
    /// Drops the cache entries only departed clients needed, after they leave.
    sweep: Arc<CacheSweep>,
}

impl AdsService {
    pub fn new(snapshots: Snapshots) -> Self {
        let clients = ClientRegistry::new();
        Self {
            sweep: CacheSweep::new(snapshots.clone(), clients.clone()),
            snapshots,
            next_stream_id: Arc::new(AtomicU64::new(1)),
            lookup: None,
            lookup_changes: None,
            counters: Arc::default(),
            clients,
            tokens: None,
            first_request_timeout: TransportSettings::default().first_request_timeout,
        }
    }

    /// Refuse streams whose first request has not come `timeout` after the server could answer it.
    pub fn with_first_request_timeout(mut self, timeout: Duration) -> Self {
        self.first_request_timeout = timeout;
        self
    }

    /// Authenticate streams that carry `authorization: Bearer TOKEN` with `verifier`.
    pub fn with_token_verifier(mut self, verifier: Option<Arc<dyn TokenVerifier>>) -> Self {
        self.tokens = verifier;
        self
    }

    /// Report streams to this registry (the admin API reads it) instead of a private one.
    pub fn with_clients(mut self, clients: Arc<ClientRegistry>) -> Self {
        self.sweep = CacheSweep::new(self.snapshots.clone(), clients.clone());
        self.clients = clients;
        self
    }

    /// What keeps the shared cache to connected clients' needs.
    pub fn cache_sweep(&self) -> &Arc<CacheSweep> {
        &self.sweep
    }

    pub fn clients(&self) -> &Arc<ClientRegistry> {
        &self.clients
    }

    /// Locate clients whose bootstrap has no `node.locality` through their pod.
    pub fn with_lookup(mut self, lookup: Option<Arc<dyn LocalityLookup>>) -> Self {
        self.lookup = lookup;
        self
    }

    /// A signal that changes whenever the lookup may answer differently (the Kubernetes source's
    /// `PodLocator::changes`): clients waiting for their pod are looked up again on it.
    pub fn with_lookup_changes(
        mut self,
        changes: Option<tokio::sync::watch::Receiver<u64>>,
    ) -> Self {
        self.lookup_changes = changes;
        self
    }

    /// The gRPC service, with the request size limit ([`MAX_REQUEST_BYTES`]).
    pub fn into_server(self) -> AdsServer {
        XdsServer(self, std::marker::PhantomData)
    }

    /// The standalone SDS service (for an Envoy whose `sds_config` names this server's gRPC service
    /// rather than ADS), on the same streams and state machines.
    pub fn into_sds_server(self) -> SdsServer {
        XdsServer(self, std::marker::PhantomData)
    }

    /// Who the stream's connection proves its client is ([`authenticate`]).
    async fn authenticate<T>(&self, request: &Request<T>) -> Result<Option<PeerIdentity>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        authenticate(
            request.extensions().get::<ConnInfo>(),
            authorization,
            self.tokens.as_deref(),
        )
        .await
    }

    /// ADS streams open (clones of a service share the count).
    pub fn live_streams(&self) -> usize {
        self.counters.live.load(Ordering::Relaxed)
    }

    pub fn stream_stats(&self) -> StreamStats {
        let c = &self.counters;
        StreamStats {
            opened: c.opened.load(Ordering::Relaxed),
            live: c.live.load(Ordering::Relaxed),
            snapshots_skipped: c.snapshots_skipped.load(Ordering::Relaxed),
            max_held_responses: c.max_held.load(Ordering::Relaxed),
        }
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The gRPC service names and method paths one xDS service is served under.
pub trait XdsMethods: Clone + Send + 'static {
    const NAME: &'static str;
    const SOTW_PATH: &'static str;
    const DELTA_PATH: &'static str;
}

/// `envoy.service.discovery.v3.AggregatedDiscoveryService`.
#[derive(Clone)]
pub struct Ads;

impl XdsMethods for Ads {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
    const SOTW_PATH: &'static str =
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
    const DELTA_PATH: &'static str =
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
}

/// `envoy.service.secret.v3.SecretDiscoveryService`: StreamSecrets and DeltaSecrets carry the same
/// messages as ADS, so they run on the same stream loop and state machines (a stream answers whatever
/// types it is asked for, like an ADS stream).
#[derive(Clone)]
pub struct Sds;

impl XdsMethods for Sds {
    const NAME: &'static str = "envoy.service.secret.v3.SecretDiscoveryService";
    const SOTW_PATH: &'static str = "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets";
    const DELTA_PATH: &'static str = "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets";
}

/// One xDS gRPC service (`M` names it and its two methods). Written out instead of using envoy-types'
/// generated servers, whose response types are fixed to `DiscoveryResponse`: ours write the cache's
/// shared encoded resources ([`wire`]). Same service names and methods, same bytes on the wire.
#[derive(Clone)]
pub struct XdsServer<M: XdsMethods>(AdsService, std::marker::PhantomData<M>);

pub type AdsServer = XdsServer<Ads>;
pub type SdsServer = XdsServer<Sds>;

impl<M: XdsMethods> tonic::server::NamedService for XdsServer<M> {
    const NAME: &'static str = M::NAME;
}

impl<M: XdsMethods, B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for XdsServer<M>
where
    B: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::codegen::http::Request<B>) -> Self::Future {
        dispatch(self.0.clone(), req, M::SOTW_PATH, M::DELTA_PATH)
    }
}

struct SotwMethod(AdsService);

impl body::XdsMethod for SotwMethod {
    type Req = SotwRequest;
    type Resp = SotwResponse;

    fn call(
        self,
        request: Request<RequestStream<SotwRequest>>,
    ) -> tonic::codegen::BoxFuture<Response<ResponseStream<SotwResponse>>, Status> {
        let service = self.0.clone();
        Box::pin(async move {
            let peer = service.authenticate(&request).await?;
            let conn = AdsConnection::with_lookup(service.lookup.clone()).with_peer(peer);
            Ok(service.open(conn, request))
        })
    }
}

struct DeltaMethod(AdsService);

impl body::XdsMethod for DeltaMethod {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaResponse;

    fn call(
        self,
        request: Request<RequestStream<DeltaDiscoveryRequest>>,
    ) -> tonic::codegen::BoxFuture<Response<ResponseStream<DeltaResponse>>, Status> {
        let service = self.0.clone();
        Box::pin(async move {
            let peer = service.authenticate(&request).await?;
            let conn = DeltaConnection::with_lookup(service.lookup.clone()).with_peer(peer);
            Ok(service.open(conn, request))
        })
    }
}

/// Serves a state-of-the-world method at `sotw` and an incremental one at `delta`.
fn dispatch<B>(
    service: AdsService,
    req: tonic::codegen::http::Request<B>,
    sotw: &str,
    delta: &str,
) -> tonic::codegen::BoxFuture<
    tonic::codegen::http::Response<tonic::body::Body>,
    std::convert::Infallible,
>
where
    B: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    let path = req.uri().path();
    if path == sotw {
        Box::pin(async move { Ok(body::serve_streaming(SotwMethod(service), req).await) })
    } else if path == delta {
        Box::pin(async move { Ok(body::serve_streaming(DeltaMethod(service), req).await) })
    } else {
        Box::pin(async move { Ok(status(&ProtocolError::UnknownMethod).into_http()) })
    }
}

/// The status a stream is refused with for a protocol reason: the one place a [`ProtocolError`]
/// becomes a gRPC status (its code, and its text as the message).
pub fn status(err: &ProtocolError) -> Status {
    let code = match err.code() {
        GrpcCode::InvalidArgument => tonic::Code::InvalidArgument,
        GrpcCode::Unimplemented => tonic::Code::Unimplemented,
        GrpcCode::PermissionDenied => tonic::Code::PermissionDenied,
    };
    Status::new(code, err.to_string())
}

#[cfg(test)]
mod tests;
