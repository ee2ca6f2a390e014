//! Read-only views for operators: which Envoys are connected and what they were sent ([`clients`]).
//! The gRPC admin API, CSDS and metrics read these; nothing here changes what Envoy gets.

pub mod api;
pub mod auth;
pub mod clients;
pub mod csds;
pub mod metrics;
pub mod render;

/// The admin API's generated types, client and server (crate `xds-admin-api`, `proto/`).
pub use xds_admin_api as proto;
