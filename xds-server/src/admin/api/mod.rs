//! The admin gRPC API (`proto/xds_admin.proto`): read-only answers from the current snapshot, the
//! client registry and the policy status. Served with Envoy's CSDS ([`super::csds`]), gRPC health and
//! server reflection on `--admin-addr` by [`router`].
//!
//! This module is the tonic service, each call handed to the module of its job, and the admin port's
//! router: `clients` (ListClients, GetClientConfig), `services` (ListServices, ListPolicies),
//! `explain` (ExplainPriorities), `events` (WatchEvents), `load` (GetLoad, WatchLoad); `convert` holds
//! the conversions they share.

use std::sync::Arc;

use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::proto as pb;
use crate::grpc::lrs::{LoadSettings, SharedLoadBook};
use crate::grpc::Snapshots;
use crate::registry::ClientRegistry;
use xds_core::observed::fleet::FleetReport;
use xds_core::policy::PolicyStatus;
use xds_core::snapshot::Snapshot;

mod clients;
mod convert;
mod events;
mod explain;
mod load;
mod services;

pub use clients::{client_pb, client_resources, newest};
pub use convert::{hash_text, origin_text, parse_type, sync_status_pb, unix_ms};
pub use events::event_pb;
pub use explain::{explain_for, with_fleet_verdicts};
pub use load::load_pb;
pub use services::{find_service, policies_pb, policy_settings_pb, services_pb};

/// The default `--admin-addr`.
pub use xds_admin_api::DEFAULT_ADDR;

#[derive(Clone)]
pub struct AdminService {
    snapshots: Snapshots,
    clients: Arc<ClientRegistry>,
    policy_status: watch::Receiver<PolicyStatus>,
    /// Where services come from: `file:PATH` or `kubernetes`.
    source: String,
    /// What clients report over LRS, and how often they do.
    load: SharedLoadBook,
    load_settings: LoadSettings,
    /// The fleet verdict's last evaluation (`fleetFailover`), for ExplainPriorities.
    fleet: watch::Receiver<FleetReport>,
}

impl AdminService {
    pub fn new(
        snapshots: Snapshots,
        clients: Arc<ClientRegistry>,
        policy_status: watch::Receiver<PolicyStatus>,
        source: impl Into<String>,
    ) -> Self {
        Self {
            snapshots,
            clients,
            policy_status,
            source: source.into(),
            load: LoadSettings::default().new_book(),
            load_settings: LoadSettings::default(),
            // No verdicts until `with_fleet_verdicts`: a channel whose sender is gone still reads.
            fleet: watch::channel(FleetReport::default()).1,
        }
    }

    /// Answer GetLoad and WatchLoad from this book (the one the LRS service writes) instead of an
    /// empty one of its own.
    pub fn with_load(mut self, book: SharedLoadBook, settings: LoadSettings) -> Self {
        self.load = book;
        self.load_settings = settings;
        self
    }

    /// Shows the fleet verdicts `fleet` publishes in ExplainPriorities.
    pub fn with_fleet_verdicts(mut self, fleet: watch::Receiver<FleetReport>) -> Self {
        self.fleet = fleet;
        self
    }

    pub fn into_server(self) -> pb::admin_server::AdminServer<Self> {
        pb::admin_server::AdminServer::new(self)
    }
}

/// The snapshot every answer reads, or UNAVAILABLE before the sources have a complete view.
fn current(snapshots: &Snapshots) -> Result<Arc<Snapshot>, Status> {
    snapshots.borrow().clone().ok_or_else(|| {
        Status::unavailable("no complete view of services and policies yet (sources syncing)")
    })
}

/// The admin port's router: its services behind the bearer token check.
pub type AdminRouter = tonic::transport::server::Router<
    tower::layer::util::Stack<crate::auth::AdminAuthLayer, tower::layer::util::Identity>,
>;

/// Every gRPC service of the admin port: the admin API, CSDS, health (SERVING) and reflection for the
/// admin API and health, all but health behind `auth` (a no-op without `--admin-token-file`).
pub fn router(
    admin: AdminService,
    csds: super::csds::CsdsService,
    auth: crate::auth::AdminAuthLayer,
) -> anyhow::Result<AdminRouter> {
    let (health, health_service) = tonic_health::server::health_reporter();
    // The admin port answers as soon as it listens; readiness of the xDS side is the xDS port's health.
    tokio::spawn(async move {
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        health
            .set_service_status(pb::SERVICE_NAME, tonic_health::ServingStatus::Serving)
            .await;
    });
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok(tonic::transport::Server::builder()
        .layer(auth)
        .add_service(admin.into_server())
        .add_service(csds.into_server())
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha))
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn list_clients(
        &self,
        _request: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ListClientsResponse>, Status> {
        Ok(Response::new(pb::ListClientsResponse {
            clients: self.clients.list().iter().map(client_pb).collect(),
        }))
    }

    async fn get_client_config(
        &self,
        request: Request<pb::GetClientConfigRequest>,
    ) -> Result<Response<pb::GetClientConfigResponse>, Status> {
        clients::client_config(&self.clients, &self.snapshots, request.into_inner())
            .map(Response::new)
    }

    async fn list_services(
        &self,
        _request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let snapshot = current(&self.snapshots)?;
        Ok(Response::new(services_pb(&snapshot, &self.source)))
    }

    async fn explain_priorities(
        &self,
        request: Request<pb::ExplainPrioritiesRequest>,
    ) -> Result<Response<pb::ExplainPrioritiesResponse>, Status> {
        let fleet = self.fleet.borrow().clone();
        explain::explain_request(&self.clients, &self.snapshots, &fleet, request.into_inner())
            .map(Response::new)
    }

    async fn list_policies(
        &self,
        _request: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        let snapshot = current(&self.snapshots)?;
        let status = self.policy_status.borrow().clone();
        Ok(Response::new(policies_pb(&snapshot, &status)))
    }

    type WatchEventsStream = events::EventStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let node = request.into_inner().node_id;
        Ok(Response::new(events::event_stream(
            self.clients.subscribe(),
            node,
        )))
    }

    async fn get_load(
        &self,
        request: Request<pb::GetLoadRequest>,
    ) -> Result<Response<pb::GetLoadResponse>, Status> {
        let filter = request.into_inner().service;
        let (book, settings) = (self.load.clone(), self.load_settings);
        // Summing the book is CPU work under its lock: off the threads serving streams.
        crate::cpu::off_runtime(move || {
            load::load_pb(&book, &settings, &filter, std::time::Instant::now())
        })
        .await
        .map(Response::new)
    }

    type WatchLoadStream = load::LoadStream;

    async fn watch_load(
        &self,
        request: Request<pb::GetLoadRequest>,
    ) -> Result<Response<Self::WatchLoadStream>, Status> {
        let filter = request.into_inner().service;
        Ok(Response::new(load::load_stream(
            self.load.clone(),
            self.load_settings,
            filter,
        )))
    }
}

#[cfg(test)]
mod fixtures;
