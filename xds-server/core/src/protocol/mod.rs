//! The xDS protocol as sans-IO state machines: a request in, responses out. [`sotw`] and [`delta`]
//! are one core ([`machine`]: the client's identity and locality from [`node`], nonces, the admin
//! view) with their own per-type bookkeeping, and share the response encoding ([`wire`]); [`limits`]
//! bounds what a stream may make us hold, and every refusal is a [`error::ProtocolError`] with its
//! gRPC status code; [`inspect`] is what the admin API may read of a machine. The tonic services that
//! drive them are in the server crate.

pub mod delta;
pub mod error;
pub mod inspect;
pub mod limits;
pub mod machine;
pub mod node;
pub mod shared;
pub mod sotw;
pub mod wire;
