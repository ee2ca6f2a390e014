//! Secrets from Kubernetes (`--secrets-namespace NS`, with the Kubernetes source): every Secret of
//! type `kubernetes.io/tls` in the namespace is an identity named after the Secret (`tls.crt`,
//! `tls.key`); the trust bundle is the `ca.crt` key of the Secret named [`TRUST_BUNDLE_SECRET`].
//!
//! Validation and the last-good rule are the directory source's (see [`super::files`]): a bad or
//! half-rotated Secret keeps its last good version and is logged with `kubernetes:NS/NAME KEY` and the
//! reason; a deleted Secret removes its identity; a deleted bundle keeps the last one. Nothing is
//! published before the first complete list.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::files::{apply_named, FileRead, Raw, CERT_FILE, KEY_FILE, TRUST_BUNDLE_FILE};
use super::SecretSet;

/// The Secret whose `ca.crt` is the trust bundle.
pub const TRUST_BUNDLE_SECRET: &str = "xds-trust-bundle";
pub const TLS_TYPE: &str = "kubernetes.io/tls";

fn raw_of<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Raw {
    let mut raw = Raw {
        bundle: Ok(None),
        identities: BTreeMap::new(),
    };
    for s in secrets {
        let get = |key: &str| -> FileRead {
            Ok(s.data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|b| b.0.clone()))
        };
        let name = s.name_any();
        if name == TRUST_BUNDLE_SECRET {
            raw.bundle = get(TRUST_BUNDLE_FILE);
        } else if s.type_.as_deref() == Some(TLS_TYPE) {
            raw.identities.insert(name, (get(CERT_FILE), get(KEY_FILE)));
        }
    }
    raw
}

/// Watches the namespace's Secrets and publishes every change of the valid secrets on `tx`: `None`
/// until the first complete list (so nothing that needs a secret is served before it), then always
/// `Some`, even if the namespace has none. Runs until `tx` has no receivers; watch errors are retried
/// with backoff.
pub async fn run(
    client: kube::Client,
    namespace: String,
    tx: watch::Sender<Option<Arc<SecretSet>>>,
) {
    let api = Api::<Secret>::namespaced(client, &namespace);
    let (store, writer) = reflector::store();
    let events = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    futures::pin_mut!(events);
    let mut listed = false;
    let mut last_raw: Option<Raw> = None;
    let name = |parts: &[&str]| match parts {
        [key] => format!("kubernetes:{namespace}/{TRUST_BUNDLE_SECRET} {key}"),
        [secret, key] => format!("kubernetes:{namespace}/{secret} {key}"),
        _ => format!("kubernetes:{namespace}"),
    };
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::InitDone) => listed = true,
            // A (re)list in progress: the store swaps to it on InitDone.
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
            Ok(_) => {}
            Err(e) => {
                warn!(namespace = %namespace, error = %e, "watching Secrets failed; retrying");
                continue;
            }
        }
        if !listed {
            continue;
        }
        let secrets = store.state();
        let raw = raw_of(secrets.iter().map(|s| s.as_ref()));
        if last_raw.as_ref() == Some(&raw) {
            continue;
        }
        let first = tx.borrow().is_none();
        let current = tx.borrow().clone().unwrap_or_default();
        let (next, errors) = apply_named(&name, &raw, &current);
        if matches!(raw.bundle, Ok(None)) && last_raw.is_none() {
            warn!(namespace = %namespace, secret = TRUST_BUNDLE_SECRET,
                  "no trust bundle Secret: SDS `ROOTCA` is not answered until it exists");
        }
        last_raw = Some(raw);
        for e in &errors {
            error!(file = %e.file, reason = %e.reason, "secret not taken; keeping its last good version");
        }
        if first || next != *current {
            info!(
                namespace = %namespace,
                identities = ?next.identities.keys().collect::<Vec<_>>(),
                trust_bundle = next.trust_bundle.is_some(),
                "secrets reloaded from Kubernetes"
            );
            tx.send_replace(Some(Arc::new(next)));
        }
        if tx.is_closed() {
            return;
        }
    }
}
