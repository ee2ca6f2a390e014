//! The standard scene: one service `echo.demo:8080` with backends in three zones of two regions, the
//! endpoints file that lists them, and `xds-server` watching that file.
//!
//! ```text
//!   us-east1 ─┬─ us-east1-b   backends answer "us-east1-b"
//!             └─ us-east1-c   backends answer "us-east1-c"
//!   us-west1 ─── us-west1-a   backends answer "us-west1-a"
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::backend::{Backend, BackendProtocol};
use crate::envoy::{Envoy, EnvoyOptions, XdsProtocol};
use crate::grpc_client::{GrpcClient, GrpcClientOptions, GrpcLibrary};
use crate::server::{ServerArgs, XdsServer};
use crate::tmp::TempDir;

pub const SERVICE: &str = "echo";
pub const NAMESPACE: &str = "demo";
pub const SERVICE_PORT: u16 = 8080;
/// The EDS cluster the server generates for the service port.
pub const CLUSTER: &str = "echo.demo:8080";
/// The Host header clients use.
pub const HOST: &str = "echo.demo";
/// What a proxyless gRPC client dials (`xds:///echo.demo:8080`): the service's `NAME.NAMESPACE:PORT`.
pub const GRPC_AUTHORITY: &str = "echo.demo:8080";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zone {
    pub region: &'static str,
    pub zone: &'static str,
}

pub const EAST_B: Zone = Zone {
    region: "us-east1",
    zone: "us-east1-b",
};
pub const EAST_C: Zone = Zone {
    region: "us-east1",
    zone: "us-east1-c",
};
pub const WEST_A: Zone = Zone {
    region: "us-west1",
    zone: "us-west1-a",
};
pub const ZONES: [Zone; 3] = [EAST_B, EAST_C, WEST_A];

/// A backend and how the endpoints file lists it.
pub struct Member {
    pub backend: Backend,
    pub zone: Zone,
    /// Written as `ready:` in the endpoints file.
    pub ready: bool,
}

pub struct Mesh {
    pub members: Vec<Member>,
    pub server: XdsServer,
    /// The ADS flavour of the Envoys this mesh starts.
    protocol: XdsProtocol,
    /// What the backends speak.
    backend_protocol: BackendProtocol,
    endpoints_path: PathBuf,
    dir: TempDir,
}

impl Mesh {
    /// `per_zone` backends in each of the three zones, the endpoints file, and the server (default
    /// policies).
    pub fn start(per_zone: usize) -> Mesh {
        Self::start_with_policy(per_zone, None)
    }

    /// Like [`Mesh::start`], with a policy file (YAML text) passed to the server as `--policies`.
    pub fn start_with_policy(per_zone: usize, policy_yaml: Option<&str>) -> Mesh {
        Self::start_with_server_args(per_zone, policy_yaml, &[])
    }

    /// Like [`Mesh::start_with_policy`], with backends speaking HTTP/2 and the gRPC health protocol
    /// (for policies with gRPC health checks, whose clusters Envoy reaches over HTTP/2).
    pub fn start_grpc_with_policy(per_zone: usize, policy_yaml: Option<&str>) -> Mesh {
        Self::build(per_zone, policy_yaml, &[], BackendProtocol::Grpc)
    }

    /// Like [`Mesh::start_grpc_with_policy`], with more `xds-server` arguments.
    pub fn start_grpc_with_server_args(
        per_zone: usize,
        policy_yaml: Option<&str>,
        server_args: &[String],
    ) -> Mesh {
        Self::build(per_zone, policy_yaml, server_args, BackendProtocol::Grpc)
    }

    /// Like [`Mesh::start_with_policy`], with more `xds-server` arguments (e.g. TLS flags).
    pub fn start_with_server_args(
        per_zone: usize,
        policy_yaml: Option<&str>,
        server_args: &[String],
    ) -> Mesh {
        Self::build(per_zone, policy_yaml, server_args, BackendProtocol::Http1)
    }

    fn build(
        per_zone: usize,
        policy_yaml: Option<&str>,
        server_args: &[String],
        backend_protocol: BackendProtocol,
    ) -> Mesh {
        let dir = TempDir::new("mesh");
        let mut members = Vec::new();
        for zone in ZONES {
            for i in 0..per_zone {
                members.push(Member {
                    backend: Backend::start_speaking(
                        backend_protocol,
                        &format!("{}-{i}", zone.zone),
                        zone.zone,
                    ),
                    zone,
                    ready: true,
                });
            }
        }
        let endpoints_path = dir.join("endpoints.yaml");
        std::fs::write(&endpoints_path, endpoints_yaml(&members)).expect("write endpoints file");
        let mut args = ServerArgs::new(&endpoints_path);
        if let Some(policy) = policy_yaml {
            let policies_dir = dir.join("policies");
            std::fs::create_dir_all(&policies_dir).expect("create policies dir");
            std::fs::write(policies_dir.join("policy.yaml"), policy).expect("write policy");
            args = args.policies(policies_dir);
        }
        args.extra.extend_from_slice(server_args);
        let server = XdsServer::start(args);
        Mesh {
            members,
            server,
            protocol: XdsProtocol::default(),
            backend_protocol,
            endpoints_path,
            dir,
        }
    }

    /// The ADS flavour of the Envoys [`Mesh::envoy`] and [`Mesh::envoy_options`] make (default SotW).
    pub fn protocol(mut self, protocol: XdsProtocol) -> Self {
        self.protocol = protocol;
        self
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn endpoints_path(&self) -> &Path {
        &self.endpoints_path
    }

    /// Options for an Envoy in `zone` pointed at this mesh's server, in this mesh's ADS flavour.
    pub fn envoy_options(&self, node_id: &str, zone: Zone) -> EnvoyOptions {
        EnvoyOptions::new(node_id, zone.region, zone.zone, self.server.addr())
            .namespace(NAMESPACE)
            .protocol(self.protocol)
    }

    /// Starts an Envoy in `zone` and waits until it answers for [`HOST`].
    pub fn envoy(&self, node_id: &str, zone: Zone) -> Envoy {
        let envoy = Envoy::start(self.envoy_options(node_id, zone));
        assert!(
            envoy.wait_serving(HOST, Duration::from_secs(20)),
            "Envoy {node_id} did not serve {HOST} within 20s; last answer: {:?}; clusters: {:?}",
            crate::traffic::request(envoy.listener_addr(), HOST),
            envoy.cluster_names()
        );
        envoy
    }

    /// Options for a proxyless gRPC client in `zone` of [`NAMESPACE`] dialing [`GRPC_AUTHORITY`]
    /// through this mesh's server.
    pub fn grpc_client_options(&self, node_id: &str, zone: Zone) -> GrpcClientOptions {
        GrpcClientOptions::new(node_id, zone, self.server.addr(), GRPC_AUTHORITY)
            .namespace(NAMESPACE)
    }

    /// Starts a proxyless gRPC client of `library` in `zone` and waits until a call is answered by
    /// `served_by`'s backends (the mesh must have been started with gRPC backends).
    pub fn grpc_client(
        &self,
        library: GrpcLibrary,
        node_id: &str,
        zone: Zone,
        served_by: Zone,
    ) -> GrpcClient {
        assert_eq!(
            self.backend_protocol,
            BackendProtocol::Grpc,
            "gRPC clients need gRPC backends: start the mesh with Mesh::start_grpc_with_policy"
        );
        let client = GrpcClient::start(library, self.grpc_client_options(node_id, zone));
        let first = client.wait_served_by(served_by.zone, Duration::from_secs(60), 0);
        println!(
            "{library} client {node_id} in {}: first answer from {} after {} ms; {}",
            zone.zone,
            served_by.zone,
            first.millis(),
            first.tally
        );
        assert!(
            first.switched(),
            "the {library} client {node_id} got no answer from {} within 60s: {}",
            served_by.zone,
            first.tally
        );
        client
    }

    pub fn backends_in(&self, zone: Zone) -> impl Iterator<Item = &Backend> {
        self.members
            .iter()
            .filter(move |m| m.zone == zone)
            .map(|m| &m.backend)
    }

    /// Stops every backend of `zone`: their connections are refused (the file still lists them ready).
    pub fn kill_zone(&mut self, zone: Zone) {
        for m in self.members.iter_mut().filter(|m| m.zone == zone) {
            m.backend.stop();
        }
    }

    /// Restarts every backend of `zone` on its old port.
    pub fn restore_zone(&mut self, zone: Zone) {
        for m in self.members.iter_mut().filter(|m| m.zone == zone) {
            m.backend.restart();
        }
    }

    /// Marks every endpoint of `zone` ready or not in the endpoints file (rewritten atomically).
    pub fn set_zone_ready(&mut self, zone: Zone, ready: bool) {
        for m in self.members.iter_mut().filter(|m| m.zone == zone) {
            m.ready = ready;
        }
        self.write_endpoints();
    }

    /// Starts a new backend in `zone`, lists it in the endpoints file, and returns its index.
    pub fn add_backend(&mut self, zone: Zone) -> usize {
        let i = self.members.iter().filter(|m| m.zone == zone).count();
        self.members.push(Member {
            backend: Backend::start_speaking(
                self.backend_protocol,
                &format!("{}-{i}", zone.zone),
                zone.zone,
            ),
            zone,
            ready: true,
        });
        self.write_endpoints();
        self.members.len() - 1
    }

    /// Replaces the policy file (atomically) the server was started with: the mesh must have been
    /// started with a policy.
    pub fn set_policy(&self, policy_yaml: &str) {
        let policies = self.dir.join("policies");
        assert!(
            policies.is_dir(),
            "the mesh was started without a policy, so the server watches no policy directory"
        );
        let tmp = self.dir.join(".policy.yaml.tmp");
        std::fs::write(&tmp, policy_yaml).expect("write policy");
        std::fs::rename(&tmp, policies.join("policy.yaml")).expect("rename policy");
    }

    /// The endpoints file as it should be now.
    pub fn endpoints_yaml(&self) -> String {
        endpoints_yaml(&self.members)
    }

    /// Rewrites the endpoints file atomically (write a temporary file, rename it over the old one), as
    /// editors and config management tools do.
    pub fn write_endpoints(&self) {
        let tmp = self.dir.join(".endpoints.yaml.tmp");
        std::fs::write(&tmp, self.endpoints_yaml()).expect("write endpoints file");
        std::fs::rename(&tmp, &self.endpoints_path).expect("rename endpoints file");
    }

    /// Rewrites the endpoints file in place (truncate and write), as `echo ... > file` does.
    pub fn write_endpoints_in_place(&self) {
        std::fs::write(&self.endpoints_path, self.endpoints_yaml()).expect("write endpoints file");
    }
}

fn endpoints_yaml(members: &[Member]) -> String {
    let mut out = format!(
        "# Written by the e2e harness.\nservices:\n- name: {SERVICE}\n  namespace: {NAMESPACE}\n  \
         ports: [{{name: http, port: {SERVICE_PORT}}}]\n  endpoints:\n"
    );
    for m in members {
        out.push_str(&format!(
            "  - address: 127.0.0.1\n    port: {}\n    locality: {{region: {}, zone: {}}}\n    \
             labels: {{app: echo}}\n    ready: {}\n",
            m.backend.port(),
            m.zone.region,
            m.zone.zone,
            m.ready
        ));
    }
    out
}
