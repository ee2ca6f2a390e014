//! Secrets from a directory (`--secrets-dir DIR`), watched:
//!
//! ```text
//! DIR/ca.crt              trust bundle (PEM, one or more CA certificates) → SDS `ROOTCA`
//! DIR/IDENTITY/tls.crt    certificate chain (PEM, leaf first)             → SDS `default` for the client
//! DIR/IDENTITY/tls.key    private key (PEM)                                 that proves the leaf's SPIFFE ID
//! ```
//!
//! `tls.crt`/`tls.key` are the keys of a Kubernetes TLS Secret, so each identity directory can be a
//! mounted Secret volume (its `..data` symlink swaps are followed). Hidden entries are ignored.
//!
//! Rotation is rewriting the files. The directory is watched by [`crate::watch`] (one level deep): a
//! change is read twice, [`STABILITY_RECHECK`] apart, and taken only when both reads of every file
//! agree; then each item is validated on its own: a bad or half-written item (a new certificate with
//! the old key, a truncated PEM) keeps its last good version and is logged once with the file and the
//! reason, while the other items move on. A removed identity directory removes the identity; a
//! removed `ca.crt` keeps the last trust bundle (dropping it would break every mTLS connection at
//! once); a directory that cannot be listed keeps the last good secrets.
//!
//! [`STABILITY_RECHECK`]: crate::watch::STABILITY_RECHECK

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;
use tracing::{error, info};

use super::{parse_trust_bundle, SecretError, SecretSet};
use crate::watch::{FileChange, WatchHandle};

pub const TRUST_BUNDLE_FILE: &str = "ca.crt";
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

/// One file as read: its bytes, `None` if it does not exist, or why it could not be read.
pub(super) type FileRead = Result<Option<Vec<u8>>, String>;

/// The secret files as read (from the directory, or Kubernetes Secrets' data), before validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Raw {
    pub(super) bundle: FileRead,
    /// Identity → (tls.crt, tls.key).
    pub(super) identities: BTreeMap<String, (FileRead, FileRead)>,
}

fn read_file(path: &Path) -> FileRead {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

fn read_raw(dir: &Path) -> Result<Raw, SecretError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| SecretError::new(dir.display().to_string(), format!("cannot list: {e}")))?;
    let mut identities = BTreeMap::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        if name.starts_with('.') || !path.is_dir() {
            continue;
        }
        identities.insert(
            name.to_string(),
            (
                read_file(&path.join(CERT_FILE)),
                read_file(&path.join(KEY_FILE)),
            ),
        );
    }
    Ok(Raw {
        bundle: read_file(&dir.join(TRUST_BUNDLE_FILE)),
        identities,
    })
}

fn apply(dir: &Path, raw: &Raw, last: &SecretSet) -> (SecretSet, Vec<SecretError>) {
    let file = |parts: &[&str]| {
        parts
            .iter()
            .fold(dir.to_path_buf(), |p, part| p.join(part))
            .display()
            .to_string()
    };
    apply_named(&file, raw, last)
}

/// What the source holds now, applied to the last good set: valid items replace theirs, invalid
/// ones keep their last good version and are returned as errors. `file` names an item's file in
/// errors (`[ca.crt]`, `[IDENTITY, tls.crt]`).
pub(super) fn apply_named(
    file: &dyn Fn(&[&str]) -> String,
    raw: &Raw,
    last: &SecretSet,
) -> (SecretSet, Vec<SecretError>) {
    let mut errors = Vec::new();
    let bundle_file = file(&[TRUST_BUNDLE_FILE]);
    let trust_bundle = match &raw.bundle {
        Ok(Some(pem)) => match parse_trust_bundle(&bundle_file, pem.clone()) {
            Ok(pem) => Some(pem),
            Err(e) => {
                errors.push(e);
                last.trust_bundle.clone()
            }
        },
        Ok(None) => {
            if last.trust_bundle.is_some() {
                errors.push(SecretError::new(
                    &bundle_file,
                    "missing; keeping the last trust bundle",
                ));
            }
            last.trust_bundle.clone()
        }
        Err(reason) => {
            errors.push(SecretError::new(
                &bundle_file,
                format!("cannot read: {reason}"),
            ));
            last.trust_bundle.clone()
        }
    };
    let mut identities = BTreeMap::new();
    for (name, (cert, key)) in &raw.identities {
        let (cert_file, key_file) = (file(&[name, CERT_FILE]), file(&[name, KEY_FILE]));
        let parsed = match (cert, key) {
            (Ok(None), Ok(None)) => continue, // not an identity directory
            (Ok(Some(c)), Ok(Some(k))) => {
                super::parse_identity(&cert_file, c.clone(), &key_file, k.clone())
            }
            (Err(reason), _) => Err(SecretError::new(
                &cert_file,
                format!("cannot read: {reason}"),
            )),
            (_, Err(reason)) => Err(SecretError::new(
                &key_file,
                format!("cannot read: {reason}"),
            )),
            (Ok(None), _) => Err(SecretError::new(
                &cert_file,
                "missing (the directory has tls.key)",
            )),
            (_, Ok(None)) => Err(SecretError::new(
                &key_file,
                "missing (the directory has tls.crt)",
            )),
        };
        match parsed {
            Ok(identity) => {
                identities.insert(name.clone(), identity);
            }
            Err(e) => {
                errors.push(e);
                if let Some(old) = last.identities.get(name) {
                    identities.insert(name.clone(), old.clone());
                }
            }
        }
    }
    let mut set = SecretSet {
        trust_bundle,
        identities,
    };
    errors.extend(set.remove_duplicate_ids(|name| file(&[name, CERT_FILE])));
    (set, errors)
}

/// Reads and validates the directory at startup. Unlike a later change there is no last good state
/// to keep, so any bad file, or a missing trust bundle, is an error.
pub fn load_secrets_dir(dir: &Path) -> Result<SecretSet, SecretError> {
    let raw = read_raw(dir)?;
    let (set, mut errors) = apply(dir, &raw, &SecretSet::default());
    if !errors.is_empty() {
        return Err(errors.remove(0));
    }
    if set.trust_bundle.is_none() {
        return Err(SecretError::new(
            dir.join(TRUST_BUNDLE_FILE).display().to_string(),
            "missing: the trust bundle (PEM CA certificates) is required",
        ));
    }
    Ok(set)
}

/// Whether `relative` (a path in the secrets directory) is one of its files: `ca.crt`, or
/// `IDENTITY/tls.crt` or `IDENTITY/tls.key` for a directory that is not hidden.
fn is_secret_file(relative: &Path) -> bool {
    let names: Vec<&str> = relative.iter().filter_map(|n| n.to_str()).collect();
    match names.as_slice() {
        [TRUST_BUNDLE_FILE] => true,
        [identity, CERT_FILE | KEY_FILE] => !identity.starts_with('.'),
        _ => false,
    }
}

/// The secret files the watch has reported, as [`read_raw`] reads them from the directory.
fn raw_of_files(dir: &Path, files: &BTreeMap<PathBuf, Vec<u8>>) -> Raw {
    let mut raw = Raw {
        bundle: Ok(None),
        identities: BTreeMap::new(),
    };
    for (path, bytes) in files {
        let relative = path.strip_prefix(dir).unwrap_or(path);
        let names: Vec<&str> = relative.iter().filter_map(|n| n.to_str()).collect();
        let content = Ok(Some(bytes.clone()));
        match names.as_slice() {
            [TRUST_BUNDLE_FILE] => raw.bundle = content,
            [identity, file] => {
                let (cert, key) = raw
                    .identities
                    .entry(identity.to_string())
                    .or_insert((Ok(None), Ok(None)));
                *(if *file == CERT_FILE { cert } else { key }) = content;
            }
            _ => {}
        }
    }
    raw
}

/// Watches `dir` and publishes every change of the valid secrets on `tx` (which holds the set
/// [`load_secrets_dir`] read). Needs a tokio runtime; dropping the handle stops watching.
pub fn watch_secrets_dir(
    dir: PathBuf,
    tx: watch::Sender<Arc<SecretSet>>,
) -> anyhow::Result<WatchHandle> {
    let root = dir.clone();
    // Every secret file as last reported (stable) by the watch.
    let mut files = BTreeMap::new();
    let mut last_raw: Option<Raw> = None;
    let on_change = move |changes: Vec<FileChange>| {
        for change in changes {
            match change.content {
                Some(bytes) => files.insert(change.path, bytes),
                None => files.remove(&change.path),
            };
        }
        let raw = raw_of_files(&root, &files);
        if last_raw.as_ref() == Some(&raw) {
            return;
        }
        let current = tx.borrow().clone();
        let (next, errors) = apply(&root, &raw, &current);
        last_raw = Some(raw);
        for e in &errors {
            error!(file = %e.file, reason = %e.reason, "secret file not taken; keeping its last good version");
        }
        if next != *current {
            let changed: Vec<&String> = next
                .identities
                .iter()
                .filter(|(name, id)| current.identities.get(*name) != Some(*id))
                .map(|(name, _)| name)
                .chain(
                    current
                        .identities
                        .keys()
                        .filter(|name| !next.identities.contains_key(*name)),
                )
                .collect();
            info!(
                dir = %root.display(),
                identities = next.identities.len(),
                changed_identities = ?changed,
                trust_bundle_changed = next.trust_bundle != current.trust_bundle,
                "secrets reloaded"
            );
            tx.send_replace(Arc::new(next));
        }
    };
    crate::watch::watch_stable_tree(dir.clone(), is_secret_file, on_change)
        .with_context(|| format!("watching the secrets directory {}", dir.display()))
}

#[cfg(test)]
mod tests;
