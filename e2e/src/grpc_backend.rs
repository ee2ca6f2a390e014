//! The HTTP/2 flavour of [`crate::backend::Backend`]: a real tonic server on 127.0.0.1 (HTTP/2 with
//! prior knowledge, as Envoy speaks to an HTTP/2 cluster without TLS) serving the gRPC health protocol
//! (`grpc.health.v1.Health/Check`, tonic-health's generated service), the unary method [`WHO`] that
//! proxyless gRPC clients call ([`crate::grpc_client`]), and answering every other request `200` with
//! the backend's body (what Envoy's HTTP traffic gets; a gRPC client would reject that answer).
//!
//! The health answer follows the backend's `healthy` flag, like `/healthz` in the HTTP/1.1 flavour:
//! `SERVING`, or `NOT_SERVING` while the app itself keeps answering, a sick pod that only an active
//! health check can notice.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::Stream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{http, BoxFuture, Context, Poll, Service, StdError};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::backend::Counters;

/// A running gRPC backend: its own runtime, so [`GrpcServing::stop`] ends the listener and every open
/// connection at once.
pub(crate) struct GrpcServing {
    runtime: tokio::runtime::Runtime,
}

impl GrpcServing {
    pub(crate) fn start(
        listener: std::net::TcpListener,
        counters: Counters,
        name: &str,
        body: &str,
    ) -> GrpcServing {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("grpc-backend-{name}"))
            .enable_all()
            .build()
            .expect("gRPC backend runtime");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener).expect("tokio listener")
        };
        let app = {
            let requests = counters.requests.clone();
            let name = name.to_string();
            let body = body.to_string();
            move || {
                requests.fetch_add(1, Ordering::Relaxed);
                let answer = ([("x-backend", name.clone())], body.clone());
                async move { answer }
            }
        };
        let who = WhoServer {
            answer: Arc::new(WhoAnswer {
                name: name.to_string(),
                body: Bytes::from(body.to_string()),
                requests: counters.requests.clone(),
            }),
        };
        let routes = tonic::service::Routes::new(HealthServer::new(FlagHealth { counters }))
            .add_service(who)
            .into_axum_router()
            .fallback(app);
        let name = name.to_string();
        runtime.spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_routes(routes.into())
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
            if let Err(e) = served {
                eprintln!("gRPC backend {name}: {e}");
            }
        });
        GrpcServing { runtime }
    }

    /// Drops the server task with its listener and connections: new connections are refused and
    /// open ones are closed.
    pub(crate) fn stop(self) {
        self.runtime.shutdown_timeout(Duration::from_secs(2));
    }
}

/// The gRPC health service, answering from the backend's `healthy` flag (any service name).
struct FlagHealth {
    counters: Counters,
}

#[tonic::async_trait]
impl Health for FlagHealth {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.counters.health_checks.fetch_add(1, Ordering::Relaxed);
        let status = if self.counters.healthy.load(Ordering::SeqCst) {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        Ok(Response::new(HealthCheckResponse {
            status: status as i32,
        }))
    }

    type WatchStream =
        Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send + 'static>>;

    /// Envoy only calls `Check`.
    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented(
            "Watch is not served by this test backend",
        ))
    }
}

/// The gRPC service of the method [`WHO`].
pub const WHO_SERVICE: &str = "e2e.Echo";
/// The unary method proxyless gRPC clients call: any request message; the answer is the backend's body
/// (its zone, by convention) as raw bytes, with the backend's name in the `x-backend` response header.
pub const WHO: &str = "/e2e.Echo/Who";

/// What [`WHO`] answers, and the backend's request counter it counts into.
struct WhoAnswer {
    name: String,
    body: Bytes,
    requests: Arc<AtomicU64>,
}

/// The `e2e.Echo` service with its one method, [`WHO`], as tonic's generated servers are made (there
/// is no `.proto`: messages are raw bytes, [`RawCodec`]).
#[derive(Clone)]
struct WhoServer {
    answer: Arc<WhoAnswer>,
}

impl tonic::server::NamedService for WhoServer {
    const NAME: &'static str = WHO_SERVICE;
}

impl<B> Service<http::Request<B>> for WhoServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let answer = self.answer.clone();
        Box::pin(async move {
            if request.uri().path() != WHO {
                let status = Status::unimplemented(format!("only {WHO} is served"));
                return Ok(status.into_http());
            }
            Ok(tonic::server::Grpc::new(RawCodec)
                .unary(WhoMethod(answer), request)
                .await)
        })
    }
}

struct WhoMethod(Arc<WhoAnswer>);

impl tonic::server::UnaryService<Bytes> for WhoMethod {
    type Response = Bytes;
    type Future = BoxFuture<Response<Bytes>, Status>;

    fn call(&mut self, _request: Request<Bytes>) -> Self::Future {
        let answer = self.0.clone();
        Box::pin(async move {
            answer.requests.fetch_add(1, Ordering::Relaxed);
            let mut response = Response::new(answer.body.clone());
            if let Ok(name) = MetadataValue::try_from(answer.name.as_str()) {
                response.metadata_mut().insert("x-backend", name);
            }
            Ok(response)
        })
    }
}

/// Messages as raw bytes, what the test clients send and read (no protobuf schema on either side).
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
