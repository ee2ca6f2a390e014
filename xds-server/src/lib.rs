//! The control plane's I/O and wiring, on top of the pure [`xds_core`]:
//!
//! [`watch`] (the one file watcher) → [`metrics`] → [`auth`], [`tls`] → [`sources`] (endpoints file,
//! Kubernetes, policies, secrets) → [`registry`] (connected clients) → [`grpc`] (ADS and SDS services)
//! → [`admin`] (admin API, CSDS) → [`app`] (wires the stages). Each imports only those before it
//! (docs/architecture.md).

pub mod admin;
pub mod app;
pub mod auth;
pub mod cpu;
pub mod grpc;
pub mod metrics;
pub mod registry;
pub mod sources;
pub mod supervise;
pub mod tls;
pub mod watch;
