//! Policy files as a source: read a file or a directory of them ([`load_policies`],
//! [`check_policies`]) and watch them ([`watch_policies`]). Parsing, validation and the cross-file
//! rules are [`xds_core::policy`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{error, info};
use xds_core::config::FileError;
use xds_core::policy::files::{find_conflict, FileUpdate, PolicyFiles};
use xds_core::policy::parse::{is_policy_file_name, parse_bytes, Parsed, POLICY_FILE};
use xds_core::policy::{PolicySet, PolicyStatus};

use super::publish_rejected;

use crate::watch::{self, FileChange, Renames, WatchHandle};

fn read_error(path: &Path, err: impl fmt::Display) -> FileError {
    FileError::read(POLICY_FILE, path.display().to_string(), err)
}

/// The policy files of a directory: `*.yaml` / `*.yml`, not hidden, sorted by name, non-recursive.
fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, FileError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| read_error(dir, e))? {
        let entry = entry.map_err(|e| read_error(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = dir.join(name);
        if is_policy_file_name(name) && std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// A file, or a directory of *.yaml / *.yml files (sorted by name, non-recursive). Entries come in file
/// order, then document order; a scope defined twice (even in different files) is an error.
pub fn load_policies(path: &Path) -> Result<PolicySet, FileError> {
    let meta = std::fs::metadata(path).map_err(|e| read_error(path, e))?;
    let files = if meta.is_dir() {
        policy_files(path)?
    } else {
        vec![path.to_path_buf()]
    };
    let mut accepted: Vec<Parsed> = Vec::new();
    for file in files {
        let bytes = std::fs::read(&file).map_err(|e| read_error(&file, e))?;
        for new in parse_bytes(&file.display().to_string(), &bytes)? {
            if let Some(err) = find_conflict(&new, &accepted) {
                return Err(err);
            }
            accepted.push(new);
        }
    }
    Ok(PolicySet {
        entries: accepted.into_iter().map(|p| p.entry).collect(),
    })
}

/// Every problem [`load_policies`] would stop at, not just the first: each file on its own, then (when
/// every file is valid) the conflicts between files. For `xds-server --check-policies`, which validates
/// policies offline, e.g. in a CI pipeline before they are applied.
pub fn check_policies(path: &Path) -> Result<PolicySet, Vec<FileError>> {
    let meta = std::fs::metadata(path).map_err(|e| vec![read_error(path, e)])?;
    let files = if meta.is_dir() {
        policy_files(path).map_err(|e| vec![e])?
    } else {
        vec![path.to_path_buf()]
    };
    let errors: Vec<FileError> = files
        .iter()
        .filter_map(|file| match std::fs::read(file) {
            Err(e) => Some(read_error(file, e)),
            Ok(bytes) => parse_bytes(&file.display().to_string(), &bytes).err(),
        })
        .collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    load_policies(path).map_err(|e| vec![e])
}

/// Logs a rejected file with structured fields `file`, `document`, `line` (when known), `field`, `reason`.
fn log_rejected(err: &FileError) {
    crate::metrics::metrics()
        .policy_reloads
        .get_or_create(&crate::metrics::result_label(false))
        .inc();
    let (file, field, reason) = (err.file(), err.field(), err.reason());
    let document = err.document().unwrap_or(0);
    match err.line() {
        Some(line) => error!(
            file,
            document,
            line,
            field,
            %reason,
            "policy file rejected; keeping its last good policies"
        ),
        None => error!(
            file,
            document,
            field,
            %reason,
            "policy file rejected; keeping its last good policies"
        ),
    }
}

/// Like [`crate::sources::endpoints_file::watch_endpoints_file`], for a policy file or directory (needs a tokio
/// runtime): each file is loaded independently; a file that becomes invalid (or would define a scope
/// another file already defines) keeps its last good entries and is logged (`tracing::error!` with
/// fields `file`, `document`, `line`, `field`, `reason`); the others update. In directory mode a
/// deleted file's policies are removed; a watched single file that disappears keeps its policies. The
/// merged [`PolicySet`] is sent whenever it changes. Dropping the handle stops watching.
pub fn watch_policies(
    path: PathBuf,
    tx: tokio::sync::watch::Sender<Arc<PolicySet>>,
) -> anyhow::Result<WatchHandle> {
    watch_policies_with_status(path, tx, None)
}

/// [`watch_policies`], also publishing the files currently rejected (and why) to `status`.
pub fn watch_policies_with_status(
    path: PathBuf,
    tx: tokio::sync::watch::Sender<Arc<PolicySet>>,
    status: Option<tokio::sync::watch::Sender<PolicyStatus>>,
) -> anyhow::Result<WatchHandle> {
    let dir_mode = std::fs::metadata(&path).is_ok_and(|m| m.is_dir());
    let (dir, file_name) = if dir_mode {
        (path.clone(), None)
    } else {
        let (dir, name) = watch::split_file_path(&path)?;
        (dir, Some(name))
    };
    let mut state = PolicyFiles::seeded(&tx.borrow());
    let on_change = move |changes: Vec<FileChange>| {
        let batch = changes
            .into_iter()
            .map(|change| {
                let file = if dir_mode {
                    change.path.display().to_string()
                } else {
                    path.display().to_string()
                };
                let update = match change.content {
                    None => FileUpdate::Deleted {
                        drop_policies: dir_mode,
                    },
                    Some(bytes) => FileUpdate::Parsed(parse_bytes(&file, &bytes)),
                };
                (file, update)
            })
            .collect();
        for err in state.update(batch) {
            log_rejected(&err);
        }
        if let Some(status) = &status {
            publish_rejected(status, |s| &mut s.files, state.rejected());
        }
        let merged = state.merged();
        let policies = merged.entries.len();
        let sent = tx.send_if_modified(|current| {
            if **current == merged {
                return false;
            }
            *current = Arc::new(merged);
            true
        });
        if sent {
            crate::metrics::metrics()
                .policy_reloads
                .get_or_create(&crate::metrics::result_label(true))
                .inc();
            info!(policies, "failover policies reloaded");
        }
    };
    match file_name {
        // Each policy file stands alone, so one renamed in is taken at once.
        None => watch::watch_stable_files(dir, is_policy_file_name, Renames::AtOnce, on_change),
        Some(name) => {
            watch::watch_stable_files(dir, move |n| n == name, Renames::AtOnce, on_change)
        }
    }
}

#[cfg(test)]
mod tests;
