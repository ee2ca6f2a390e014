//! Discovery sources. Each publishes a complete, validated value (a [`xds_core::model::Registry`],
//! a [`xds_core::policy::PolicySet`], a [`secrets::SecretSet`]), never a partial one.

pub mod endpoints_file;
pub mod kubernetes;
pub mod policy;
pub mod secrets;
