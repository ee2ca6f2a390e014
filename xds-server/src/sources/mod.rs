//! Discovery sources. Each publishes a complete, validated [`crate::model::Registry`], never a partial one.

pub mod file;
pub mod kubernetes;
pub mod watch;
pub(crate) mod yaml;
