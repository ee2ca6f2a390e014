//! The pure translator: model + policy + client locality class → Envoy resources.

pub mod explain;
pub mod grpc;
pub mod input;
pub mod load_split;
pub mod mtls;
pub mod priorities;
pub mod resources;

pub use priorities::{priorities, LocalityClass, PriorityPlan};
