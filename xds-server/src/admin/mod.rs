//! Read-only views for operators over gRPC: the admin API ([`api`]: connected clients, what each was
//! sent, services, policies, explain, events) and CSDS ([`csds`]). They read the client registry and
//! the snapshot; nothing here changes what a client gets.

pub mod api;
pub mod csds;
pub mod render;

/// The admin API's generated types, client and server (crate `xds-admin-api`, `proto/`).
pub use xds_admin_api as proto;
