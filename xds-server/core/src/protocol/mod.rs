//! The xDS protocol as sans-IO state machines: a request in, responses out. [`sotw`] and [`delta`]
//! share the client identity ([`node`]) and the response encoding ([`wire`]); [`inspect`] is what the
//! admin API may read of a machine. The tonic services that drive them are in the server crate.

pub mod delta;
pub mod inspect;
pub mod node;
pub mod sotw;
pub mod wire;
