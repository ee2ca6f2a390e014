//! Envoy xDS control plane with locality-priority failover.
//!
//! The crate reads as a pipeline: [`sources`] → [`model`] → [`policy`] → [`translate`] (pure) →
//! [`cache`] → [`server`] → [`admin`].

pub mod admin;
pub mod cache;
pub mod model;
pub mod policy;
pub mod secrets;
pub mod server;
pub mod sources;
pub mod tls;
pub mod translate;
