//! The locality-failover scenario, which the demo (`failover-demo`) narrates and the failover tests
//! (`tests/failover.rs`) assert: the standard [`Mesh`], one Envoy in us-east1-b, and traffic through
//! it while zones die, come back, and are drained and restored through the endpoints file.
//!
//! Each step changes the mesh, then sends a request every [`EVERY`] until the zone it should move to
//! answers, and a few more ([`traffic::until_served_by`], timed from just before the change). The
//! caller judges the [`Switch`] it returns: the tests assert, the demo reports.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::envoy::Envoy;
use crate::topology::{Mesh, Zone, EAST_B, HOST};
use crate::traffic::{self, Switch, Tally};

/// One request every 10 ms (each on a new connection).
pub const EVERY: Duration = Duration::from_millis(10);

/// The mesh and the client Envoy in us-east1-b.
pub struct Failover {
    pub mesh: Mesh,
    pub envoy: Envoy,
}

impl Failover {
    /// Starts the Envoy `node_id` in us-east1-b against `mesh` and waits until it serves [`HOST`].
    pub fn start(mesh: Mesh, node_id: &str) -> Failover {
        let envoy = mesh.envoy(node_id, EAST_B);
        Failover { mesh, envoy }
    }

    /// The Envoy's outbound listener.
    pub fn addr(&self) -> SocketAddr {
        self.envoy.listener_addr()
    }

    /// `n` requests through the Envoy, one every `interval`.
    pub fn send(&self, n: usize, interval: Duration) -> Tally {
        traffic::send(self.addr(), HOST, n, interval)
    }

    /// Kills every backend of `zone` (connections refused; the endpoints file still lists them ready),
    /// then waits for traffic to move to `to`: within `within`, then `after` more requests.
    pub fn kill_zone(&mut self, zone: Zone, to: Zone, within: Duration, after: usize) -> Switch {
        let t0 = Instant::now();
        self.mesh.kill_zone(zone);
        self.until_served_by(to, t0, within, after)
    }

    /// Restarts the backends of `zones` on their old ports, then waits for traffic to move to `to`.
    pub fn restore_zones(
        &mut self,
        zones: &[Zone],
        to: Zone,
        within: Duration,
        after: usize,
    ) -> Switch {
        let t0 = Instant::now();
        for &zone in zones {
            self.mesh.restore_zone(zone);
        }
        self.until_served_by(to, t0, within, after)
    }

    /// Marks `zone` ready or not in the endpoints file (a planned drain, and its end), then waits for
    /// traffic to move to `to`.
    pub fn set_zone_ready(
        &mut self,
        zone: Zone,
        ready: bool,
        to: Zone,
        within: Duration,
        after: usize,
    ) -> Switch {
        let t0 = Instant::now();
        self.mesh.set_zone_ready(zone, ready);
        self.until_served_by(to, t0, within, after)
    }

    fn until_served_by(&self, to: Zone, t0: Instant, within: Duration, after: usize) -> Switch {
        traffic::until_served_by(self.addr(), HOST, to.zone, t0, EVERY, within, after)
    }
}
