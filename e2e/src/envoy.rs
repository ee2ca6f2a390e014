//! A real Envoy started from the shipped sample bootstrap (`deploy/envoy/sidecar-bootstrap.yaml`),
//! patched only where one machine running many Envoys requires it: node id, locality, metadata (listener
//! address and port), the admin port and the xDS server's address; plus the ADS flavour
//! (`ads_config.api_type`, see [`XdsProtocol`]), so every test can run against both. With
//! [`EnvoyOptions::xds_tls`] it starts from the mutual TLS sample (`sidecar-bootstrap-mtls.yaml`)
//! instead, with the test's certificate paths and server name; with [`EnvoyOptions::xds_token`] from
//! the token sample (`sidecar-bootstrap-token.yaml`), with the test's CA, token file and server address.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

use crate::tmp::TempDir;

/// How long Envoy may take to get its listener from the control plane.
pub const LISTENER_TIMEOUT: Duration = Duration::from_secs(30);
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Which ADS flavour Envoy speaks: `dynamic_resources.ads_config.api_type` in its bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum XdsProtocol {
    /// State of the world, `api_type: GRPC` (what the shipped sample bootstrap says).
    #[default]
    Sotw,
    /// Incremental, `api_type: DELTA_GRPC`.
    Delta,
}

impl XdsProtocol {
    /// The bootstrap's `ads_config.api_type`.
    pub fn api_type(self) -> &'static str {
        match self {
            XdsProtocol::Sotw => "GRPC",
            XdsProtocol::Delta => "DELTA_GRPC",
        }
    }

    /// The `protocol` field of the server's `Envoy connected` log line.
    pub fn name(self) -> &'static str {
        match self {
            XdsProtocol::Sotw => "sotw",
            XdsProtocol::Delta => "delta",
        }
    }
}

impl std::fmt::Display for XdsProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Who this Envoy is and where its control plane is.
#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    pub node_id: String,
    pub region: String,
    pub zone: String,
    pub subzone: String,
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// More string keys for node metadata, e.g. `pod_name` and `pod_ip`.
    pub metadata: BTreeMap<String, String>,
    pub xds: SocketAddr,
    /// The port asked for in node metadata `listener_port` (a free port if `None`).
    pub listener_port: Option<u16>,
    /// State of the world (the default) or incremental ADS.
    pub protocol: XdsProtocol,
    /// Connect to the xDS server over TLS (the mTLS sample bootstrap) with these files.
    pub xds_tls: Option<XdsTls>,
    /// Connect over TLS with a ServiceAccount token file (the token sample bootstrap).
    pub xds_token: Option<XdsToken>,
}

/// What the token sample bootstrap's Google gRPC client is given.
#[derive(Debug, Clone)]
pub struct XdsToken {
    /// The CA that signed the server's certificate (which must name 127.0.0.1).
    pub ca: PathBuf,
    /// The token file, read again by Envoy for every new stream.
    pub token_file: PathBuf,
}

/// What the mTLS sample bootstrap's `xds_cluster` transport socket is given.
#[derive(Debug, Clone)]
pub struct XdsTls {
    /// Envoy's client certificate and key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA that signed the server's certificate.
    pub ca: PathBuf,
    /// SNI and the DNS name the server's certificate must carry.
    pub server_name: String,
}

impl EnvoyOptions {
    pub fn new(node_id: &str, region: &str, zone: &str, xds: SocketAddr) -> Self {
        EnvoyOptions {
            node_id: node_id.to_string(),
            region: region.to_string(),
            zone: zone.to_string(),
            subzone: String::new(),
            namespace: None,
            labels: BTreeMap::new(),
            metadata: BTreeMap::new(),
            xds,
            listener_port: None,
            protocol: XdsProtocol::default(),
            xds_tls: None,
            xds_token: None,
        }
    }

    /// An Envoy whose bootstrap has no `node.locality` (region, zone and subzone empty), e.g. one
    /// the control plane must locate through its Pod (see [`EnvoyOptions::metadata`]).
    pub fn without_locality(node_id: &str, xds: SocketAddr) -> Self {
        Self::new(node_id, "", "", xds)
    }

    pub fn namespace(mut self, ns: &str) -> Self {
        self.namespace = Some(ns.to_string());
        self
    }

    pub fn subzone(mut self, subzone: &str) -> Self {
        self.subzone = subzone.to_string();
        self
    }

    pub fn listener_port(mut self, port: u16) -> Self {
        self.listener_port = Some(port);
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }

    /// A string in node metadata, e.g. `pod_name`, `pod_ip`.
    pub fn metadata(mut self, key: &str, value: &str) -> Self {
        self.metadata.insert(key.to_string(), value.to_string());
        self
    }

    /// State of the world or incremental (Delta) ADS.
    pub fn protocol(mut self, protocol: XdsProtocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Start from the token sample bootstrap (`sidecar-bootstrap-token.yaml`), with these files.
    pub fn xds_token(mut self, token: XdsToken) -> Self {
        self.xds_token = Some(token);
        self
    }

    /// Start from the mutual TLS sample bootstrap, with these files and server name.
    pub fn xds_tls(mut self, tls: XdsTls) -> Self {
        self.xds_tls = Some(tls);
        self
    }
}

/// One host of a cluster as Envoy's admin `/clusters?format=json` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStatus {
    pub address: String,
    pub port: u16,
    pub priority: u32,
    pub region: String,
    pub zone: String,
    pub subzone: String,
    /// `HEALTHY`, `UNHEALTHY`, `DRAINING`, ... as sent by the control plane.
    pub eds_health_status: String,
    /// Ejected by outlier detection.
    pub failed_outlier_check: bool,
    /// Failed the cluster's active health check (`/failed_active_hc` in the text `/clusters`).
    pub failed_active_health_check: bool,
    /// The host's counters as this Envoy keeps them (`rq_total`, `rq_error`, `cx_connect_fail`,
    /// ...); a counter Envoy leaves out of the JSON is 0.
    pub stats: BTreeMap<String, u64>,
}

impl HostStatus {
    /// One of [`HostStatus::stats`], 0 if absent.
    pub fn stat(&self, name: &str) -> u64 {
        self.stats.get(name).copied().unwrap_or(0)
    }
}

/// Loads the sample bootstrap (the mTLS one with [`EnvoyOptions::xds_tls`]) and patches it for one
/// Envoy. Panics if the sample lost a piece the harness relies on (which would mean the sample no
/// longer works as documented).
pub fn bootstrap(opts: &EnvoyOptions, admin_port: u16, listener_port: u16) -> Yaml {
    let path = match (&opts.xds_tls, &opts.xds_token) {
        (_, Some(_)) => crate::paths::sample_token_bootstrap(),
        (Some(_), None) => crate::paths::sample_mtls_bootstrap(),
        (None, None) => crate::paths::sample_bootstrap(),
    };
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut doc: Yaml = serde_yaml_ng::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));

    let node = field(&mut doc, "node");
    *field(node, "id") = Yaml::from(opts.node_id.clone());
    let locality = field(node, "locality");
    *field(locality, "region") = Yaml::from(opts.region.clone());
    *field(locality, "zone") = Yaml::from(opts.zone.clone());
    let locality = locality
        .as_mapping_mut()
        .expect("node.locality is a mapping");
    if opts.subzone.is_empty() {
        locality.remove("sub_zone");
    } else {
        locality.insert("sub_zone".into(), opts.subzone.clone().into());
    }
    if opts.region.is_empty() && opts.zone.is_empty() && opts.subzone.is_empty() {
        node.as_mapping_mut()
            .expect("node is a mapping")
            .remove("locality");
    }
    let metadata = field(node, "metadata");
    *field(metadata, "listener_address") = Yaml::from("127.0.0.1");
    *field(metadata, "listener_port") = Yaml::from(listener_port);
    let metadata = metadata
        .as_mapping_mut()
        .expect("node.metadata is a mapping");
    match &opts.namespace {
        Some(ns) => {
            metadata.insert("namespace".into(), ns.clone().into());
        }
        None => {
            metadata.remove("namespace");
        }
    }
    let mut labels = serde_yaml_ng::Mapping::new();
    for (k, v) in &opts.labels {
        labels.insert(k.clone().into(), v.clone().into());
    }
    metadata.insert("labels".into(), Yaml::Mapping(labels));
    for (k, v) in &opts.metadata {
        metadata.insert(k.clone().into(), v.clone().into());
    }

    // Set in both modes, so a SotW test stays SotW whatever the sample says.
    let ads = field(field(&mut doc, "dynamic_resources"), "ads_config");
    *field(ads, "api_type") = Yaml::from(opts.protocol.api_type());

    if let Some(token) = &opts.xds_token {
        // No static xds_cluster: Google gRPC connects to target_uri itself, for ADS and for load
        // reports alike (both streams carry the token).
        let path = |p: &Path| Yaml::from(p.display().to_string());
        let patch = |grpc_services: &mut Yaml| {
            let google = field(seq0(grpc_services), "google_grpc");
            *field(google, "target_uri") = Yaml::from(opts.xds.to_string());
            let ssl = field(field(google, "channel_credentials"), "ssl_credentials");
            *field(field(ssl, "root_certs"), "filename") = path(&token.ca);
            let plugin = field(
                field(seq0(field(google, "call_credentials")), "from_plugin"),
                "typed_config",
            );
            *field(field(plugin, "secret_data"), "filename") = path(&token.token_file);
        };
        patch(field(ads, "grpc_services"));
        patch(field(
            field(field(&mut doc, "cluster_manager"), "load_stats_config"),
            "grpc_services",
        ));
    }

    let admin_addr = field(field(field(&mut doc, "admin"), "address"), "socket_address");
    *field(admin_addr, "address") = Yaml::from("127.0.0.1");
    *field(admin_addr, "port_value") = Yaml::from(admin_port);

    if opts.xds_token.is_some() {
        return doc;
    }
    let clusters = field(field(&mut doc, "static_resources"), "clusters")
        .as_sequence_mut()
        .expect("static_resources.clusters is a list");
    let xds_cluster = clusters
        .iter_mut()
        .find(|c| c.get("name").and_then(Yaml::as_str) == Some("xds_cluster"))
        .expect("the sample bootstrap has a static cluster named xds_cluster");
    let socket = field(
        field(
            field(
                seq0(field(
                    seq0(field(field(xds_cluster, "load_assignment"), "endpoints")),
                    "lb_endpoints",
                )),
                "endpoint",
            ),
            "address",
        ),
        "socket_address",
    );
    *field(socket, "address") = Yaml::from(opts.xds.ip().to_string());
    *field(socket, "port_value") = Yaml::from(opts.xds.port());
    if let Some(tls) = &opts.xds_tls {
        let path = |p: &Path| Yaml::from(p.display().to_string());
        let tls_context = field(field(xds_cluster, "transport_socket"), "typed_config");
        *field(tls_context, "sni") = Yaml::from(tls.server_name.clone());
        let common = field(tls_context, "common_tls_context");
        let identity = seq0(field(common, "tls_certificates"));
        *field(field(identity, "certificate_chain"), "filename") = path(&tls.cert);
        *field(field(identity, "private_key"), "filename") = path(&tls.key);
        let validation = field(common, "validation_context");
        *field(field(validation, "trusted_ca"), "filename") = path(&tls.ca);
        let san = seq0(field(validation, "match_typed_subject_alt_names"));
        *field(field(san, "matcher"), "exact") = Yaml::from(tls.server_name.clone());
    }
    doc
}

fn field<'a>(v: &'a mut Yaml, key: &str) -> &'a mut Yaml {
    v.get_mut(key)
        .unwrap_or_else(|| panic!("sample bootstrap: missing key {key:?}"))
}

fn seq0(v: &mut Yaml) -> &mut Yaml {
    v.get_mut(0)
        .expect("sample bootstrap: expected a non-empty list")
}

pub struct Envoy {
    child: Option<Child>,
    /// Counts this Envoy for tests that run [`alone`](crate::alone::alone).
    _live: crate::alone::Live,
    node_id: String,
    protocol: XdsProtocol,
    xds: SocketAddr,
    admin_port: u16,
    listener_port: u16,
    bootstrap_path: PathBuf,
    log_path: PathBuf,
    _dir: TempDir,
}

impl Envoy {
    /// Starts Envoy and waits until its outbound listener (pushed by the control plane) accepts
    /// connections. Panics with Envoy's log if it does not within [`LISTENER_TIMEOUT`]. If the
    /// control plane is an [`XdsServer`](crate::server::XdsServer) of this process, also checks
    /// with [`Envoy::verify_protocol`] that it speaks the ADS flavour it was configured with.
    pub fn start(opts: EnvoyOptions) -> Envoy {
        let envoy = Self::spawn(opts);
        if !envoy.wait_listener(LISTENER_TIMEOUT) {
            panic!(
                "Envoy {} did not open its listener {} within {LISTENER_TIMEOUT:?}; its log:\n{}",
                envoy.node_id,
                envoy.listener_addr(),
                crate::tail(&envoy.log(), 60)
            );
        }
        if crate::server::log_path_for(envoy.xds.port()).is_some() {
            envoy.verify_protocol();
        }
        envoy
    }

    /// Proves this Envoy talks to its control plane in the configured [`XdsProtocol`]: the server
    /// (an [`XdsServer`](crate::server::XdsServer) of this process) must have logged
    /// `Envoy connected` for this node, every time with that protocol (it picks SotW or Delta by
    /// the gRPC method Envoy called). Waits up to 5 s for the first such line. Panics otherwise,
    /// and also if this Envoy's control plane is not such a server. Recorded for
    /// [`crate::modes::run`].
    pub fn verify_protocol(&self) {
        let port = self.xds.port();
        let log_path = crate::server::log_path_for(port).unwrap_or_else(|| {
            panic!(
                "Envoy {}: no XdsServer of this test process on {}, cannot verify its protocol",
                self.node_id, self.xds
            )
        });
        let node = format!("node={}", self.node_id);
        let lines = || -> Vec<String> {
            std::fs::read_to_string(&log_path)
                .unwrap_or_default()
                .lines()
                .filter(|l| {
                    l.contains("Envoy connected") && l.split_whitespace().any(|w| w == node)
                })
                .map(str::to_string)
                .collect()
        };
        let connected = crate::poll(Duration::from_secs(5), Duration::from_millis(20), || {
            let l = lines();
            (!l.is_empty()).then_some(l)
        })
        .unwrap_or_else(|| {
            panic!(
                "Envoy {}: the server never logged `Envoy connected` for it",
                self.node_id
            )
        });
        let want = self.protocol.name();
        let wrong: Vec<&String> = connected
            .iter()
            .filter(|l| {
                !l.split_whitespace()
                    .any(|w| w == format!("protocol=\"{want}\"") || w == format!("protocol={want}"))
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "Envoy {} is configured for {want} (api_type {}) but the server saw another protocol:\n{}",
            self.node_id,
            self.protocol.api_type(),
            wrong
                .iter()
                .map(|l| l.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
        crate::modes::record_verified(&self.node_id);
    }

    /// The ADS flavour this Envoy was configured with.
    pub fn protocol(&self) -> XdsProtocol {
        self.protocol
    }

    /// Starts Envoy and waits only until its admin API answers (no control plane needed).
    pub fn spawn(opts: EnvoyOptions) -> Envoy {
        let live = crate::alone::Live::new();
        let dir = TempDir::new(&format!("envoy-{}", opts.node_id));
        let admin_port = crate::ports::free_port();
        let listener_port = opts.listener_port.unwrap_or_else(crate::ports::free_port);
        let doc = bootstrap(&opts, admin_port, listener_port);
        let bootstrap_path = dir.join("bootstrap.yaml");
        std::fs::write(
            &bootstrap_path,
            serde_yaml_ng::to_string(&doc).expect("serialize bootstrap"),
        )
        .expect("write bootstrap");
        let log_path = dir.join("envoy.log");
        let log = std::fs::File::create(&log_path).expect("create envoy log");
        let child = Command::new(crate::paths::envoy_bin())
            .arg("-c")
            .arg(&bootstrap_path)
            .args(["--disable-hot-restart", "--concurrency", "1"])
            .args(["--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {}: {e}", crate::paths::envoy_bin().display())
            });
        crate::modes::record_spawned(&opts.node_id, opts.protocol);
        let mut envoy = Envoy {
            child: Some(child),
            _live: live,
            node_id: opts.node_id.clone(),
            protocol: opts.protocol,
            xds: opts.xds,
            admin_port,
            listener_port,
            bootstrap_path,
            log_path,
            _dir: dir,
        };
        let started = Instant::now();
        while envoy.admin_get("/server_info").is_err() {
            if !envoy.is_running() {
                panic!(
                    "Envoy {} exited at startup; its log:\n{}",
                    envoy.node_id,
                    crate::tail(&envoy.log(), 60)
                );
            }
            if started.elapsed() > Duration::from_secs(20) {
                panic!(
                    "Envoy {} admin API did not answer within 20s; its log:\n{}",
                    envoy.node_id,
                    crate::tail(&envoy.log(), 60)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        envoy
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Freezes Envoy (SIGSTOP): it reads nothing and answers nothing until [`Envoy::resume`].
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a paused Envoy run again (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.child.as_ref().expect("Envoy is running").id();
        // SAFETY: kill(2) on our own child's pid; no memory is shared.
        let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// Where to send traffic: the outbound listener the control plane configured for this Envoy.
    pub fn listener_addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.listener_port).into()
    }

    pub fn admin_addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.admin_port).into()
    }

    pub fn bootstrap_path(&self) -> &Path {
        &self.bootstrap_path
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    pub fn wait_listener(&self, timeout: Duration) -> bool {
        crate::poll(timeout, Duration::from_millis(20), || {
            crate::ports::is_listening(self.listener_port).then_some(())
        })
        .is_some()
    }

    /// Waits until a request for `host` through this Envoy is answered 200.
    pub fn wait_serving(&self, host: &str, timeout: Duration) -> bool {
        crate::poll(timeout, Duration::from_millis(50), || {
            crate::traffic::request(self.listener_addr(), host).ok()
        })
        .is_some()
    }

    /// GET on the admin API; the body if it answered 200.
    pub fn admin_get(&self, path: &str) -> Result<String, String> {
        let resp = crate::http::get(self.admin_addr(), "localhost", path, ADMIN_TIMEOUT)
            .map_err(|e| format!("admin GET {path}: {e}"))?;
        if resp.status != 200 {
            return Err(format!(
                "admin GET {path}: HTTP {}: {}",
                resp.status,
                resp.text()
            ));
        }
        Ok(resp.text())
    }

    fn admin_json(&self, path: &str) -> Json {
        let text = self.admin_get(path).unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("admin {path}: bad JSON: {e}"))
    }

    /// Admin `/clusters?format=json`.
    pub fn clusters_json(&self) -> Json {
        self.admin_json("/clusters?format=json")
    }

    /// Names of the clusters Envoy has.
    pub fn cluster_names(&self) -> Vec<String> {
        self.clusters_json()["cluster_statuses"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The hosts of `cluster`, sorted by (priority, port); empty if the cluster is unknown.
    pub fn hosts(&self, cluster: &str) -> Vec<HostStatus> {
        let json = self.clusters_json();
        let Some(c) = json["cluster_statuses"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["name"].as_str() == Some(cluster)))
        else {
            return Vec::new();
        };
        let mut hosts: Vec<HostStatus> = c["host_statuses"]
            .as_array()
            .map(|a| a.iter().map(host_status).collect())
            .unwrap_or_default();
        hosts.sort_by_key(|h| (h.priority, h.port));
        hosts
    }

    /// Admin `/config_dump` (with EDS when `include_eds`).
    pub fn config_dump(&self, include_eds: bool) -> Json {
        self.admin_json(if include_eds {
            "/config_dump?include_eds"
        } else {
            "/config_dump"
        })
    }

    /// One section of `/config_dump` by the end of its `@type`, e.g. `ListenersConfigDump`,
    /// `RoutesConfigDump`, `ClustersConfigDump`, `EndpointsConfigDump` (`Null` if absent).
    pub fn config_dump_section(&self, type_suffix: &str) -> Json {
        let dump = self.config_dump(type_suffix == "EndpointsConfigDump");
        dump["configs"]
            .as_array()
            .and_then(|configs| {
                configs.iter().find(|c| {
                    c["@type"]
                        .as_str()
                        .is_some_and(|t| t.ends_with(&format!(".{type_suffix}")))
                })
            })
            .cloned()
            .unwrap_or(Json::Null)
    }

    /// All stats whose name matches the regex `filter`, as name → value text.
    pub fn stats(&self, filter: &str) -> BTreeMap<String, String> {
        let text = self
            .admin_get(&format!("/stats?filter={}", url_escape(filter)))
            .unwrap_or_else(|e| panic!("{e}"));
        text.lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_string(), v.trim().trim_matches('"').to_string()))
            .collect()
    }

    /// One stat by exact name (cluster names inside it may be given with `:`; Envoy writes `_`).
    pub fn stat(&self, name: &str) -> Option<String> {
        let name = name.replace(':', "_");
        let filter = format!("^{}$", regex_escape(&name));
        self.stats(&filter).remove(&name)
    }

    pub fn stat_u64(&self, name: &str) -> Option<u64> {
        self.stat(name).and_then(|v| v.parse().ok())
    }

    /// Waits (up to `timeout`) until this Envoy's load-report stream (LRS) has moved on: another
    /// request or answer on it (`load_reporter.requests` counts only the stream's first request,
    /// `load_reporter.responses` every answer; xds-server answers every report). False if it did not.
    /// Either starts a new report period, and from then on Envoy reports the load of every cluster
    /// it has now: it counts a cluster's load only from the first report period that begins after
    /// the cluster appeared, and never reports requests sent before that (measured: 60 of the first
    /// 151 requests of a new Envoy, sent at once, went unreported).
    pub fn wait_next_load_report(&self, timeout: Duration) -> bool {
        let moves = || {
            ["load_reporter.requests", "load_reporter.responses"]
                .iter()
                .map(|name| self.stat_u64(name).unwrap_or(0))
                .sum::<u64>()
        };
        let before = moves();
        crate::poll(timeout, Duration::from_millis(50), || {
            (moves() > before).then_some(())
        })
        .is_some()
    }

    /// `cluster.NAME.version_text`: the version of the last EDS answer this cluster accepted.
    pub fn eds_version(&self, cluster: &str) -> Option<String> {
        self.stat(&format!("cluster.{cluster}.version_text"))
    }

    /// Kills Envoy.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn host_status(h: &Json) -> HostStatus {
    let sa = &h["address"]["socket_address"];
    let s = |v: &Json| v.as_str().unwrap_or_default().to_string();
    HostStatus {
        address: s(&sa["address"]),
        port: sa["port_value"].as_u64().unwrap_or(0) as u16,
        priority: h["priority"].as_u64().unwrap_or(0) as u32,
        region: s(&h["locality"]["region"]),
        zone: s(&h["locality"]["zone"]),
        subzone: s(&h["locality"]["sub_zone"]),
        eds_health_status: s(&h["health_status"]["eds_health_status"]),
        failed_outlier_check: h["health_status"]["failed_outlier_check"]
            .as_bool()
            .unwrap_or(false),
        failed_active_health_check: h["health_status"]["failed_active_health_check"]
            .as_bool()
            .unwrap_or(false),
        stats: h["stats"]
            .as_array()
            .map(|stats| {
                stats
                    .iter()
                    .filter_map(|stat| {
                        let value = stat["value"]
                            .as_u64()
                            .or_else(|| stat["value"].as_str()?.parse().ok())
                            .unwrap_or(0);
                        Some((stat["name"].as_str()?.to_string(), value))
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn url_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- Envoy {} log ({}), last lines ----\n{}\n---- end of Envoy {} log ----",
                self.node_id,
                self.log_path.display(),
                crate::tail(&self.log(), 40),
                self.node_id
            );
        }
        self.kill();
    }
}
