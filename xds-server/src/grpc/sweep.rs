//! Keeps the shared cache to what connected clients need. The snapshot memoises answers by keys
//! clients send (locality class, namespace, bind address, inbound ports); once no connected client has
//! a key, its answers are dropped ([`Snapshot::retain_for`]), so clients that leave take their share of
//! the cache with them. The registry knows who is connected; the snapshot knows what it holds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use super::Snapshots;
use crate::registry::ClientRegistry;

/// How long after a client leaves the cache is swept: one sweep for a burst of departures (a rollout,
/// a network blip), not one per client.
const SWEEP_DELAY: Duration = Duration::from_millis(200);

pub struct CacheSweep {
    snapshots: Snapshots,
    clients: Arc<ClientRegistry>,
    /// A sweep is scheduled and has not started yet.
    scheduled: AtomicBool,
}

impl CacheSweep {
    pub fn new(snapshots: Snapshots, clients: Arc<ClientRegistry>) -> Arc<Self> {
        Arc::new(Self {
            snapshots,
            clients,
            scheduled: AtomicBool::new(false),
        })
    }

    /// A client left: sweep after [`SWEEP_DELAY`], unless a sweep is already scheduled.
    pub fn client_left(self: &Arc<Self>) {
        // Streams end in `Drop`, which may run where there is no runtime (one shutting down, a test's
        // stream dropped after its runtime): nothing is left to sweep for there.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        runtime.spawn(async move {
            tokio::time::sleep(SWEEP_DELAY).await;
            // Cleared before sweeping: a client leaving during the sweep schedules the next one.
            this.scheduled.store(false, Ordering::Release);
            this.sweep();
        });
    }

    /// Drops what no connected client needs from the current snapshot's memos (which later snapshots
    /// carry forward).
    pub fn sweep(&self) {
        let Some(snapshot) = self.snapshots.borrow().clone() else {
            return;
        };
        let mut needed = snapshot.cache_keys();
        self.clients.for_each_client(|c| needed.add(c));
        let dropped = snapshot.retain_for(&needed);
        let left = snapshot.stats();
        debug!(
            generation = snapshot.generation,
            dropped_eds_answers = dropped.eds_answers,
            dropped_route_configs = dropped.route_configs,
            dropped_listeners = dropped.listeners,
            dropped_bytes = dropped.bytes,
            cached_bytes = left.bytes,
            "cache swept of what only departed clients needed"
        );
    }
}
