//! What every file we read has in common: YAML field paths, positions and "did you mean" hints
//! ([`yaml`]), the one [`FileError`] ([`error`]), duration and port scalars ([`scalar`]); and the
//! endpoints file format. Reading and watching files is the server's job; this is the pure part.

pub mod endpoints;
pub mod error;
pub mod scalar;
pub mod yaml;

pub use error::{FileError, FileKind};
