//! The HTTP/2 flavour of [`crate::backend::Backend`]: a real tonic server on 127.0.0.1 (HTTP/2 with
//! prior knowledge, as Envoy speaks to an HTTP/2 cluster without TLS) serving the gRPC health protocol
//! (`grpc.health.v1.Health/Check`, tonic-health's generated service) and answering every other request
//! `200` with the backend's body.
//!
//! The health answer follows the backend's `healthy` flag, like `/healthz` in the HTTP/1.1 flavour:
//! `SERVING`, or `NOT_SERVING` while the app itself keeps answering, a sick pod that only an active
//! health check can notice.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::Stream;
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
        let routes = tonic::service::Routes::new(HealthServer::new(FlagHealth { counters }))
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
