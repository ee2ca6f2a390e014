//! Failover policies as sources: YAML files ([`files`]) and `FailoverPolicy` custom resources
//! ([`kube`], [`crd`]), each publishing its part of the [`PolicyStatus`]; the custom resources'
//! `status` is written by [`status`], by one elected replica. What a policy means is
//! [`xds_core::policy`].

use xds_core::policy::{PolicyStatus, RejectedPolicy};

pub mod crd;
pub mod files;
pub mod kube;
pub mod status;

/// Replaces one part of the published status, waking readers only if it changed.
pub fn publish_rejected(
    status: &tokio::sync::watch::Sender<PolicyStatus>,
    part: fn(&mut PolicyStatus) -> &mut Vec<RejectedPolicy>,
    rejected: Vec<RejectedPolicy>,
) {
    status.send_if_modified(|s| {
        let slot = part(s);
        if *slot == rejected {
            return false;
        }
        *slot = rejected;
        true
    });
}
