//! The endpoints file as a source: read it ([`load_endpoints_file`]) and watch it
//! ([`watch_endpoints_file`]). Its format and parser are [`xds_core::config::endpoints`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{error, info, warn};
use xds_core::config::endpoints::{parse_bytes, ENDPOINTS_FILE};
use xds_core::config::FileError;
use xds_core::model::Registry;

use crate::watch::{self, FileChange, WatchHandle};

/// Reads, parses and validates an endpoints file.
pub fn load_endpoints_file(path: &Path) -> Result<Registry, FileError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|err| FileError::read(ENDPOINTS_FILE, &file, err))?;
    parse_bytes(&file, &bytes)
}
/// Logs a rejected file with structured fields `file`, `line` (when known), `field` and `reason`.
fn log_rejected(err: &FileError) {
    let m = crate::metrics::metrics();
    m.source_errors
        .get_or_create(&crate::metrics::source_label("file"))
        .inc();
    let (file, field, reason) = (err.file(), err.field(), err.reason());
    match err.line() {
        Some(line) => error!(
            file,
            line,
            field,
            %reason,
            "endpoints file rejected; keeping the last good state"
        ),
        None => error!(
            file,
            field,
            %reason,
            "endpoints file rejected; keeping the last good state"
        ),
    }
}

/// Spawns a task (needs a tokio runtime) that watches the file and sends each new *valid* Registry that
/// differs from the last one sent (the channel's current value); invalid content is logged
/// (`tracing::error!` with fields `file`, `line`, `field`, `reason`) and the last good state is kept.
/// A deleted file also keeps the last good state until it reappears. Dropping the handle stops
/// watching.
pub fn watch_endpoints_file(
    path: PathBuf,
    tx: tokio::sync::watch::Sender<Arc<Registry>>,
) -> anyhow::Result<WatchHandle> {
    let (dir, name) = watch::split_file_path(&path)?;
    let file = path.display().to_string();
    // An atomic rename (what the docs recommend) is taken at once; in-place writes settle first.
    watch::watch_stable_files(
        dir,
        move |n| n == name,
        watch::Renames::AtOnce,
        move |changes: Vec<FileChange>| {
            // One file, so at most one change.
            for change in changes {
                let Some(bytes) = change.content else {
                    warn!(
                        file = %file,
                        "endpoints file is gone; keeping the last good state until it reappears"
                    );
                    continue;
                };
                match parse_bytes(&file, &bytes) {
                    Ok(registry) => {
                        let services = registry.services.len();
                        let sent = tx.send_if_modified(|current| {
                            if **current == registry {
                                return false;
                            }
                            *current = Arc::new(registry);
                            true
                        });
                        if sent {
                            crate::metrics::metrics()
                                .source_events
                                .get_or_create(&crate::metrics::source_label("file"))
                                .inc();
                            info!(file = %file, services, "endpoints file reloaded");
                        }
                    }
                    Err(err) => log_rejected(&err),
                }
            }
        },
    )
}

#[cfg(test)]
mod tests;
