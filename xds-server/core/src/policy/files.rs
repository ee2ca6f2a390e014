//! A set of policy files and the rules between them: each file is accepted or held back on its own,
//! a scope may be defined by one file only, and a policy can move between files in one batch.

use std::collections::BTreeMap;

use tracing::{info, warn};

use super::parse::Parsed;
use super::{PolicyOrigin, PolicyScope, PolicySet, RejectedPolicy};
use crate::config::FileError;

/// The watcher's state: the last good policies of every file, keyed by file (as written in `source`),
/// and the valid files held back because they define a scope another file already defines.
#[derive(Default)]
pub struct PolicyFiles {
    files: BTreeMap<String, Vec<Parsed>>,
    blocked: BTreeMap<String, Vec<Parsed>>,
    /// Why each file's current content is not in force (invalid, or blocked by a conflict).
    errors: BTreeMap<String, FileError>,
}

/// What happened to one file in a batch.
pub enum FileUpdate {
    Parsed(Result<Vec<Parsed>, FileError>),
    /// Deleted; `drop_policies` in directory mode.
    Deleted {
        drop_policies: bool,
    },
}

impl PolicyFiles {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts from what was already published (normally `load_policies` of the same path).
    pub fn seeded(current: &PolicySet) -> Self {
        let mut state = Self::new();
        for entry in &current.entries {
            if let PolicyOrigin::Named { source, .. } = &entry.origin {
                state.files.entry(source.clone()).or_default().push(Parsed {
                    entry: entry.clone(),
                    document: 0,
                    scope_field: String::new(),
                    line: None,
                    column: None,
                    backup_positions: Vec::new(),
                });
            }
        }
        state
    }

    /// Applies a batch and returns the errors to log (only for files of this batch).
    pub fn update(&mut self, batch: Vec<(String, FileUpdate)>) -> Vec<FileError> {
        let mut errors = Vec::new();
        let mut pending = Vec::new();
        let mut in_batch = Vec::new();
        for (file, update) in batch {
            self.blocked.remove(&file);
            self.errors.remove(&file);
            match update {
                FileUpdate::Deleted { drop_policies } => {
                    if drop_policies && self.files.remove(&file).is_some() {
                        info!(file = %file, "policy file removed; its policies no longer apply");
                    } else if !drop_policies {
                        warn!(
                            file = %file,
                            "policy file is gone; keeping its last good policies until it reappears"
                        );
                    }
                }
                FileUpdate::Parsed(Err(err)) => {
                    self.errors.insert(file, err.clone());
                    errors.push(err);
                }
                FileUpdate::Parsed(Ok(parsed)) => {
                    in_batch.push(file.clone());
                    pending.push((file, parsed));
                }
            }
        }
        // Files held back earlier may fit now.
        pending.extend(std::mem::take(&mut self.blocked));
        for (file, _) in &pending {
            self.errors.remove(file);
        }
        for (file, parsed, err) in self.accept(pending) {
            if in_batch.contains(&file) {
                errors.push(err.clone());
            }
            self.errors.insert(file.clone(), err);
            self.blocked.insert(file, parsed);
        }
        errors
    }

    /// Files not (fully) in force and why, for the admin API.
    pub fn rejected(&self) -> Vec<RejectedPolicy> {
        self.errors
            .iter()
            .map(|(file, err)| RejectedPolicy {
                source: format!("file:{file}"),
                error: err.to_string(),
            })
            .collect()
    }

    /// Accepts each new file content that does not conflict with the other files' current policies,
    /// retrying until nothing more can be accepted (so a policy can move from one file to another in
    /// one batch, in either order). Returns the files that stay rejected.
    fn accept(
        &mut self,
        mut pending: Vec<(String, Vec<Parsed>)>,
    ) -> Vec<(String, Vec<Parsed>, FileError)> {
        loop {
            let mut progressed = false;
            let mut rejected = Vec::new();
            for (file, parsed) in pending {
                let others = self
                    .files
                    .iter()
                    .filter(|(f, _)| **f != file)
                    .flat_map(|(_, p)| p);
                let found = parsed
                    .iter()
                    .find_map(|new| find_conflict(new, others.clone()));
                match found {
                    None => {
                        self.files.insert(file, parsed);
                        progressed = true;
                    }
                    Some(err) => rejected.push((file, parsed, err)),
                }
            }
            if rejected.is_empty() || !progressed {
                return rejected;
            }
            pending = rejected.into_iter().map(|(f, p, _)| (f, p)).collect();
        }
    }

    pub fn merged(&self) -> PolicySet {
        PolicySet {
            entries: self
                .files
                .values()
                .flatten()
                .map(|p| p.entry.clone())
                .collect(),
        }
    }
}

/// `namespace shop`, `service shop/web port http`, ...
pub fn describe_scope(scope: &PolicyScope) -> String {
    match scope {
        PolicyScope::Mesh => "the mesh default (namespace \"*\")".to_string(),
        PolicyScope::Namespace(ns) => format!("namespace {ns}"),
        PolicyScope::Service(id) => format!("service {id}"),
        PolicyScope::ServicePort(id, port) => format!("service {id} port {port}"),
    }
}

/// The error for `new` having the same scope as the already accepted `other`.
fn conflict(new: &Parsed, other: &Parsed) -> FileError {
    FileError::Invalid {
        file: new.source().to_string(),
        document: Some(new.document),
        line: new.line,
        column: new.column,
        field: new.scope_field.clone(),
        reason: format!(
            "policy {} has the same scope ({}) as policy {}{}; only one policy may apply per scope: \
             merge them or delete one",
            new.describe(),
            describe_scope(&new.entry.scope),
            other.describe(),
            other.whereabouts(),
        ),
    }
}

/// A scope already taken by an accepted policy, or backups that would close a cycle with them.
pub fn find_conflict<'a>(
    new: &Parsed,
    accepted: impl IntoIterator<Item = &'a Parsed>,
) -> Option<FileError> {
    let accepted: Vec<&Parsed> = accepted.into_iter().collect();
    if let Some(other) = accepted.iter().find(|p| p.entry.scope == new.entry.scope) {
        return Some(conflict(new, other));
    }
    let cycle = super::backup_cycle(&new.entry, accepted.iter().map(|p| &p.entry))?;
    // The backup of `new` the cycle leaves through, and the policy that leads back.
    let index = new
        .entry
        .policy
        .backups
        .iter()
        .position(|b| b.service == cycle[1])
        .unwrap_or(0);
    let hops: Vec<String> = cycle.iter().map(ToString::to_string).collect();
    let back = accepted.iter().find(|p| {
        p.entry.scope.service() == Some(&cycle[cycle.len() - 2])
            && p.entry
                .policy
                .backups
                .iter()
                .any(|b| b.service == cycle[cycle.len() - 1])
    });
    let closing = back.map_or_else(String::new, |p| {
        format!(
            "; policy {}{} backs up to {}",
            p.describe(),
            p.whereabouts(),
            cycle[cycle.len() - 1]
        )
    });
    let pos = new.backup_positions.get(index).copied().flatten();
    Some(FileError::Invalid {
        file: new.source().to_string(),
        document: Some(new.document),
        line: pos.map(|p| p.line).or(new.line),
        column: pos.map(|p| p.column).or(new.column),
        field: format!("spec.backups[{index}]"),
        reason: format!(
            "policy {} makes backups form a cycle: {}{closing}; a service cannot be a backup of its \
             own backup: remove one of these backups",
            new.describe(),
            hops.join(" → "),
        ),
    })
}

#[cfg(test)]
mod tests;
