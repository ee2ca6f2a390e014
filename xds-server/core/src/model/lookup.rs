//! The seam between the protocol and the sources for clients that do not say where they run: the
//! protocol asks a [`LocalityLookup`] (implemented by the Kubernetes source) with a [`PodHint`].

use std::collections::BTreeMap;

use super::Locality;

/// Which pod a client runs in, when its bootstrap does not set `node.locality`: node metadata `pod_name`
/// (with `namespace`) or `pod_ip`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PodHint {
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub ip: Option<String>,
    /// The cluster the client says it runs in (its `topology.istio.io/cluster` label): with several
    /// clusters, only that one is searched, since pod names and IPs repeat across clusters.
    pub cluster: Option<String>,
}

/// Finds a client's locality from where its pod runs (the Kubernetes source implements it: Pod →
/// Node → topology labels).
pub trait LocalityLookup: Send + Sync {
    fn locality_of(&self, pod: &PodHint) -> Option<Locality>;

    /// Labels the pod's placement implies, such as the cluster and network it was found in when
    /// several clusters are watched. Node metadata labels the client sets itself take precedence.
    fn labels_of(&self, _pod: &PodHint) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
}
