//! Discovery sources. Each publishes a complete, validated [`crate::model::Registry`], never a partial one.

pub mod file;
