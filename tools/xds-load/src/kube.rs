//! `--source kubernetes`: the same clients and measurements as the file source, but the server watches
//! the test Kubernetes API server ([`test_apiserver`], in this process) and every change is an
//! EndpointSlice write, the production path.
//!
//! The mesh of [`Scenario`] as Kubernetes objects: a Node per (region, zone) labelled with both, a
//! Service per service (port `http` 8080) and one EndpointSlice per Service whose endpoints name the
//! Node of their locality. [`run`] starts the API server with them, starts the real server with a
//! kubeconfig for it, connects the clients and measures:
//!
//! 1. single changes, timed from the EndpointSlice write, split into the floor (write → the server
//!    logged `publishing new snapshot`: watch, coalescing, registry build, snapshot build) and the push;
//! 2. churn: every change its own write, `churn_rate` a second, server RSS sampled;
//! 3. a burst (a rollout): every endpoint of ⌈burst / endpoints per service⌉ services replaced, one
//!    write per endpoint, as fast as they can be written; timed from the first write until every
//!    client holds every change.

use std::ffi::OsString;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use serde::Serialize;
use serde_json::{json, Value};
use test_apiserver::{ApiServer, KindInfo};

use crate::client::{Change, Tracker};
use crate::report::{Dist, Report, RunReport, Target};
use crate::scenario::{self, Scenario, NAMESPACE, PORT};
use crate::spawn::ServerProcess;
use crate::{procfs, ChangeSink, Changer, Config, Mode, Protocol, Sampler, SourceWrite};

const REGION_LABEL: &str = "topology.kubernetes.io/region";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What the Kubernetes scenario adds to [`Config`].
#[derive(Debug, Clone, Serialize)]
pub struct KubeOptions {
    /// Endpoint changes in the burst (0: no burst); rounded up to whole services.
    pub burst_changes: usize,
}

impl Default for KubeOptions {
    fn default() -> Self {
        KubeOptions { burst_changes: 500 }
    }
}

/// A rollout: many endpoint changes written back to back.
#[derive(Debug, Clone, Serialize)]
pub struct Burst {
    pub run: String,
    pub services: usize,
    pub changes: usize,
    pub converged: usize,
    /// Time to write every change to the API server, ms.
    pub write_ms: f64,
    /// First write → every client holds every change, ms (`None`: some change never converged).
    pub all_ms: Option<f64>,
    /// Per change: its write → every client has it.
    pub convergence: Option<Dist>,
    /// Snapshots the server published for the burst.
    pub publishes: usize,
    pub missing_clients: Vec<usize>,
}

/// The Kubernetes scenario's report: the file source's figures per run (same fields, same meaning,
/// with "written" meaning the EndpointSlice write), the bursts, and the targets for this source.
#[derive(Debug, Clone, Serialize)]
pub struct KubeReport {
    pub source: &'static str,
    pub options: KubeOptions,
    pub report: Report,
    pub bursts: Vec<Burst>,
}

impl KubeReport {
    pub fn human(&self) -> String {
        let mut o = String::from(
            "source: kubernetes (in-process test API server; every change its own EndpointSlice \
             write, churn included)\n",
        );
        o.push_str(&self.report.human());
        for b in &self.bursts {
            o.push_str(&format!(
                "\n== {}: burst ({} changes over {} services, written in {:.0} ms) ==\n\
                 every client holds every change: {}; per change p50/p99/max {}; {} snapshots \
                 published; {}/{} converged\n",
                b.run,
                b.changes,
                b.services,
                b.write_ms,
                b.all_ms
                    .map_or("NOT converged".into(), |ms| format!("{ms:.0} ms")),
                b.convergence.map_or("-".into(), |d| format!(
                    "{:.0}/{:.0}/{:.0} ms",
                    d.p50_ms, d.p99_ms, d.max_ms
                )),
                b.publishes,
                b.converged,
                b.changes,
            ));
        }
        o
    }
}

/// `node-region-R-zone-Z`: the Node of a locality.
pub fn node_name(r: usize, z: usize) -> String {
    format!("node-{}", scenario::zone_name(r, z))
}

fn node(name: &str, r: usize, z: usize) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {
            REGION_LABEL: scenario::region_name(r),
            ZONE_LABEL: scenario::zone_name(r, z),
            "kubernetes.io/hostname": name,
        }},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    })
}

fn service(i: usize) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": scenario::service_name(i), "namespace": NAMESPACE},
        "spec": {"type": "ClusterIP", "ports": [
            {"name": "http", "port": PORT, "targetPort": PORT, "protocol": "TCP"}
        ]},
    })
}

/// Service `i`'s one EndpointSlice, with its endpoints' current addresses; each endpoint on the Node
/// of its locality (so its locality comes from the Node's labels, as in a cluster).
fn endpoint_slice(scenario: &Scenario, i: usize) -> Value {
    let endpoints: Vec<Value> = scenario
        .addresses(i)
        .iter()
        .enumerate()
        .map(|(j, address)| {
            let (r, z) = scenario.locality(j);
            json!({
                "addresses": [address],
                "nodeName": node_name(r, z),
                "conditions": {"ready": true, "serving": true, "terminating": false},
            })
        })
        .collect();
    let name = scenario::service_name(i);
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-1"), "namespace": NAMESPACE,
                     "labels": {SERVICE_NAME_LABEL: name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": PORT, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

/// Loads the scenario into the API server: Nodes, Services, EndpointSlices.
pub fn load_objects(api: &ApiServer, scenario: &Scenario) {
    for r in 0..scenario.regions {
        for z in 0..scenario.zones {
            api.apply(node(&node_name(r, z), r, z));
        }
    }
    for i in 0..scenario.services {
        api.apply(service(i));
        api.apply(endpoint_slice(scenario, i));
    }
}

/// Changes as EndpointSlice writes: each changed service's slice replaced once per write.
struct SliceWriter {
    api: Arc<ApiServer>,
}

impl ChangeSink for SliceWriter {
    fn write(&self, scenario: &Scenario, clusters: &[u32]) -> SourceWrite {
        let mut services: Vec<usize> = clusters.iter().map(|&c| c as usize).collect();
        services.dedup();
        let slices: Vec<Value> = services
            .iter()
            .map(|&i| endpoint_slice(scenario, i))
            .collect();
        let api = self.api.clone();
        Box::new(move || {
            // Timed from the start of the write: the API server hands the event to the watches
            // inside `apply`, possibly before it returns.
            let at = (Instant::now(), SystemTime::now());
            for slice in slices {
                api.apply(slice);
            }
            Ok(at)
        })
    }
}

/// The Kubernetes scenario with the default [`KubeOptions`] (a 500-change burst).
pub async fn run(config: &Config) -> anyhow::Result<KubeReport> {
    run_with(config, &KubeOptions::default()).await
}

/// Runs every configured protocol against the server on the Kubernetes source (no baseline: sharing
/// is not what this scenario measures).
pub async fn run_with(config: &Config, options: &KubeOptions) -> anyhow::Result<KubeReport> {
    crate::preflight(config)?;
    let machine = procfs::Machine::detect();
    let mut runs = Vec::new();
    let mut bursts = Vec::new();
    for &protocol in &config.protocols {
        let (run, burst) = run_one(config, options, protocol).await?;
        runs.push(run);
        bursts.extend(burst);
    }
    let targets = targets(&runs, &bursts);
    Ok(KubeReport {
        source: "kubernetes",
        options: options.clone(),
        report: Report {
            machine,
            config: config.clone(),
            ratios: Vec::new(),
            targets,
            target_scenario: config.is_target_scenario(),
            runs,
        },
        bursts,
    })
}

async fn run_one(
    config: &Config,
    options: &KubeOptions,
    protocol: Protocol,
) -> anyhow::Result<(RunReport, Option<Burst>)> {
    let name = format!("{}/kubernetes", protocol.name());
    let start = crate::run::RunStart::now();
    let dir = crate::tmp::TempDir::new("load-kube");
    let scenario = Scenario::new(
        config.services,
        config.endpoints_per_service,
        config.regions,
        config.zones,
    );
    let api = Arc::new(ApiServer::start());
    // The server watches FailoverPolicies too; none exist here, but the kind must list.
    api.register_kind(KindInfo::failover_policy());
    load_objects(&api, &scenario);
    // As a real API server does (about every minute): without them the server's idle-watch guard
    // restarts the quiet watches (Nodes, Pods, FailoverPolicies) after 120 s, in the middle of the
    // measurements.
    api.send_bookmarks_every(Some(Duration::from_secs(60)));
    let kubeconfig = dir.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let source: Vec<OsString> = vec![
        "--source".into(),
        "kubernetes".into(),
        "--kubeconfig".into(),
        kubeconfig.into(),
    ];
    let mut server = ServerProcess::start_with_source(
        &config.server_bin,
        &source,
        &dir.join("xds-server.log"),
        &[],
    )?;
    server.wait_ready(Duration::from_secs(120)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = server.sample().context("sampling the server")?;
    let sampler = Sampler::start(server.pid());
    crate::say(
        config,
        format!(
            "{name}: server ready on the API server's {} services (idle RSS {:.1} MiB); connecting {} clients",
            config.services,
            idle.rss as f64 / (1 << 20) as f64,
            config.clients
        ),
    );

    // Every client's first full config.
    let connected =
        crate::run::connect_all(config, &name, &mut server, &scenario, protocol, &idle).await?;
    let tracker = connected.tracker.clone();
    let complete = connected.initial.complete;

    let mut changer = Changer::new(scenario, Box::new(SliceWriter { api: api.clone() }));
    let timeout = Duration::from_secs(config.change_timeout_s);
    // Every churn change its own API write: the API server has no quiet period to respect.
    let each_alone = Config {
        churn_write_interval_ms: 0,
        ..config.clone()
    };
    let phases = crate::run::changes(
        config,
        &name,
        &mut server,
        &connected,
        &mut changer,
        &sampler,
        Some(&each_alone),
    )
    .await?;
    let burst = if options.burst_changes > 0 && complete > 0 {
        Some(
            burst(
                config,
                options,
                &name,
                &mut server,
                &tracker,
                &mut changer,
                timeout,
            )
            .await?,
        )
    } else {
        None
    };

    drop(sampler);
    let report = crate::run::finish(
        config,
        &name,
        server,
        connected,
        start,
        idle,
        (protocol, Mode::Shared),
        phases,
    )
    .await;
    Ok((report, burst))
}

/// The rollout: every endpoint of enough services to make `burst_changes` changes, one write per
/// endpoint, back to back.
async fn burst(
    config: &Config,
    options: &KubeOptions,
    name: &str,
    server: &mut ServerProcess,
    tracker: &Arc<Tracker>,
    changer: &mut Changer,
    timeout: Duration,
) -> anyhow::Result<Burst> {
    let per_service = config.endpoints_per_service;
    let services = options
        .burst_changes
        .div_ceil(per_service)
        .min(config.services);
    let mut picked = Vec::with_capacity(services);
    while picked.len() < services {
        match changer.pick(tracker, &picked) {
            Some(c) => picked.push(c),
            None => break,
        }
    }
    crate::say(
        config,
        format!(
            "{name}: burst of {} changes over {} services",
            picked.len() * per_service,
            picked.len()
        ),
    );
    let publishes_before = server.publishes().len();
    let started = Instant::now();
    let mut changes: Vec<Arc<Change>> = Vec::with_capacity(picked.len() * per_service);
    // Pod by pod across the services, as a rolling update replaces them.
    for _ in 0..per_service {
        for &cluster in &picked {
            changes.extend(changer.apply(tracker, &[cluster]).await?);
        }
    }
    let write_ms = started.elapsed().as_secs_f64() * 1e3;
    crate::wait_until(server, timeout, || changes.iter().all(|c| c.converged())).await?;
    for c in &changes {
        if !c.converged() {
            tracker.retire(c);
        }
    }
    let (converged, convergence, missing_clients) = crate::convergence(&changes);
    let first = changes
        .iter()
        .map(|c| c.applied_ns.load(Ordering::Acquire))
        .min()
        .unwrap_or(0);
    let all_ms = (converged == changes.len()).then(|| {
        let last = changes
            .iter()
            .map(|c| c.last_ns.load(Ordering::Acquire))
            .max()
            .unwrap_or(first);
        last.saturating_sub(first) as f64 / 1e6
    });
    crate::say(
        config,
        format!(
            "{name}: burst: {}",
            all_ms.map_or("NOT converged".into(), |ms| format!(
                "every client has all {} changes {ms:.0} ms after the first write",
                changes.len()
            ))
        ),
    );
    Ok(Burst {
        run: name.to_string(),
        services: picked.len(),
        changes: changes.len(),
        converged,
        write_ms,
        all_ms,
        convergence,
        publishes: server.publishes().len() - publishes_before,
        missing_clients,
    })
}

/// The targets for the Kubernetes source.
pub fn targets(runs: &[RunReport], bursts: &[Burst]) -> Vec<Target> {
    let mut out = Vec::new();
    for r in runs {
        let mut push = |what: &str, limit: &str, measured: String, met: bool| {
            out.push(Target {
                run: r.name(),
                what: what.into(),
                limit: limit.into(),
                measured,
                met,
            })
        };
        if let Some(s) = &r.single {
            let p99 = s.convergence.map(|d| d.p99_ms);
            push(
                "one EndpointSlice change at every client, p99",
                "< 150 ms",
                p99.map_or("none converged".into(), |p| {
                    format!("{p:.0} ms ({}/{} converged)", s.converged, s.changes)
                }),
                p99.is_some_and(|p| p < 150.0) && s.converged == s.changes,
            );
        }
        if let Some(c) = &r.churn {
            let p99 = c.convergence.map(|d| d.p99_ms);
            push(
                "churn, p99 convergence",
                "< 500 ms",
                p99.map_or("none converged".into(), |p| {
                    format!("{p:.0} ms ({}/{} converged)", c.converged, c.changes)
                }),
                p99.is_some_and(|p| p < 500.0) && c.converged == c.changes,
            );
            let bounded = c.rss_mid > 0 && (c.rss_end as f64) <= c.rss_mid as f64 * 1.10;
            push(
                "churn, no RSS growth (end ≤ 1.1 × middle)",
                "bounded",
                format!(
                    "{:.0} → {:.0} → {:.0} MiB",
                    c.rss_start as f64 / (1 << 20) as f64,
                    c.rss_mid as f64 / (1 << 20) as f64,
                    c.rss_end as f64 / (1 << 20) as f64
                ),
                bounded,
            );
        }
    }
    for b in bursts {
        out.push(Target {
            run: b.run.clone(),
            what: format!("burst of {} changes converged at every client", b.changes),
            limit: "< 2 s".into(),
            measured: b
                .all_ms
                .map_or("not converged".into(), |ms| format!("{ms:.0} ms")),
            met: b.all_ms.is_some_and(|ms| ms < 2000.0),
        });
    }
    out
}
