//! The Load Reporting Service (`envoy.service.load_stats.v3.LoadReportingService`) on the xDS port:
//! asks every client for all its clusters at a fixed interval and records what it reports in a
//! shared [`LoadBook`]. A client's window is forgotten when its stream ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::load_stats::v3::load_reporting_service_server::{
    LoadReportingService, LoadReportingServiceServer,
};
use envoy_types::pb::envoy::service::load_stats::v3::{LoadStatsRequest, LoadStatsResponse};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use xds_core::observed::{LoadBook, LocalityLoad, RowKey};

use super::AdsService;

/// The LRS service: authenticates like ADS, answers with `send_all_clusters` and the interval.
#[derive(Clone)]
pub struct LrsService {
    ads: AdsService,
    book: Arc<Mutex<LoadBook>>,
    interval: Duration,
    next_client: Arc<AtomicU64>,
}

impl LrsService {
    pub fn new(ads: AdsService, book: Arc<Mutex<LoadBook>>, interval: Duration) -> Self {
        Self {
            ads,
            book,
            interval,
            next_client: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn into_server(self) -> LoadReportingServiceServer<Self> {
        LoadReportingServiceServer::new(self)
    }
}

/// Forgets the client in the book when its stream is dropped, however it ends.
struct ForgetOnDrop(Arc<Mutex<LoadBook>>, u64);

impl Drop for ForgetOnDrop {
    fn drop(&mut self) {
        if let Ok(mut book) = self.0.lock() {
            book.forget(self.1);
        }
    }
}

type LoadStatsStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<LoadStatsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl LoadReportingService for LrsService {
    type StreamLoadStatsStream = LoadStatsStream;

    async fn stream_load_stats(
        &self,
        request: Request<Streaming<LoadStatsRequest>>,
    ) -> Result<Response<Self::StreamLoadStatsStream>, Status> {
        self.ads.authenticate(&request).await?;
        let client = self.next_client.fetch_add(1, Ordering::Relaxed);
        let book = self.book.clone();
        let interval = self.interval;
        let requests = request.into_inner();
        let forget = ForgetOnDrop(book.clone(), client);
        // One answer sets the interval for the stream's life; grpcio and grpc-js need
        // load_reporting_interval set, grpc-js skips the first cluster of an explicit list.
        let stream = futures::stream::unfold(
            (requests, forget, false),
            move |(mut requests, forget, answered)| {
                let book = book.clone();
                async move {
                    loop {
                        match requests.next().await? {
                            Err(status) => return Some((Err(status), (requests, forget, true))),
                            Ok(report) => {
                                record(&book, client, &report, Instant::now());
                                if !answered {
                                    let response = LoadStatsResponse {
                                        send_all_clusters: true,
                                        load_reporting_interval: Some(prost_duration(interval)),
                                        ..Default::default()
                                    };
                                    return Some((Ok(response), (requests, forget, true)));
                                }
                            }
                        }
                    }
                }
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }
}

fn prost_duration(d: Duration) -> envoy_types::pb::google::protobuf::Duration {
    envoy_types::pb::google::protobuf::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn record(book: &Mutex<LoadBook>, client: u64, report: &LoadStatsRequest, now: Instant) {
    let Ok(mut book) = book.lock() else { return };
    for cluster in &report.cluster_stats {
        for stats in &cluster.upstream_locality_stats {
            let locality = stats
                .locality
                .as_ref()
                .map(|l| format!("{}/{}/{}", l.region, l.zone, l.sub_zone))
                .unwrap_or_default();
            let key = RowKey {
                cluster: cluster.cluster_name.clone(),
                locality,
                priority: stats.priority,
            };
            let load = LocalityLoad {
                successful: stats.total_successful_requests,
                errors: stats.total_error_requests,
                in_flight: stats.total_requests_in_progress,
            };
            debug!(client, cluster = %key.cluster, locality = %key.locality, "load report");
            book.record(client, key, &load, now);
        }
    }
}
