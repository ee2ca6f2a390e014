//! Which clusters the current snapshot serves, as LRS reports name them, and the priorities a gRPC
//! client was sent (gRPC reports every locality at priority 0).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::model::{ClientInfo, Locality};
use crate::snapshot::{ClusterEntry, Snapshot};
use crate::translate;

/// One cluster (service port) a report may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedCluster {
    /// `NAME.NAMESPACE`.
    pub service: String,
    pub port: u16,
    /// Every locality its endpoints (its own and its backups') are in: the only ones recorded. Shared
    /// with the load book's rows.
    pub localities: BTreeSet<Arc<Locality>>,
}

/// The clusters of one snapshot by name: what bounds the rows of the [`LoadBook`](super::LoadBook).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServedClusters(BTreeMap<Arc<str>, ServedCluster>);

impl ServedClusters {
    pub fn of(snapshot: &Snapshot) -> Self {
        Self(
            snapshot
                .clusters()
                .map(|entry| {
                    let input = &entry.input;
                    let served = ServedCluster {
                        service: format!(
                            "{}.{}",
                            input.service.id.name, input.service.id.namespace
                        ),
                        port: input.port.port,
                        localities: input
                            .blocks()
                            .flat_map(|block| block.endpoints)
                            .map(|ep| Arc::new(ep.locality.clone()))
                            .collect(),
                    };
                    (Arc::from(entry.name()), served)
                })
                .collect(),
        )
    }

    pub fn get(&self, cluster: &str) -> Option<&ServedCluster> {
        self.0.get(cluster)
    }

    /// The cluster with its shared name.
    pub(super) fn entry(&self, cluster: &str) -> Option<(&Arc<str>, &ServedCluster)> {
        self.0.get_key_value(cluster)
    }

    /// Whether `cluster` is served and has endpoints in `locality`.
    pub fn knows(&self, cluster: &str, locality: &Locality) -> bool {
        self.get(cluster)
            .is_some_and(|c| c.localities.contains(locality))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &ServedCluster)> {
        self.0.iter()
    }
}

/// The priority of each locality in the EDS answer `client` (a proxyless gRPC client) gets for
/// `entry`: the same translation its answer came from, so the numbering (gap-free, empty levels left
/// out) is the one the client used. A locality in several levels counts at its most preferred one.
pub fn grpc_priorities(entry: &ClusterEntry, client: &ClientInfo) -> BTreeMap<Locality, u32> {
    let class = entry.class_of(client);
    let plan = translate::priorities(&class, &entry.input, &entry.policy.policy);
    let assignment = translate::grpc::load_assignment(entry.name(), &entry.input, &class, &plan);
    let mut out = BTreeMap::new();
    for group in assignment.endpoints {
        let locality = group
            .locality
            .map(|l| Locality::new(&l.region, &l.zone, &l.sub_zone))
            .unwrap_or_default();
        out.entry(locality).or_insert(group.priority);
    }
    out
}
