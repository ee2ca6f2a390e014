//! What every file we read has in common (YAML field paths, positions, "did you mean" hints), and the
//! endpoints file format. Reading and watching files is the server's job; this is the pure part.

pub mod endpoints;
pub mod yaml;
