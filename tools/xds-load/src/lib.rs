//! `xds-load`: a load generator for `xds-server`. Simulated Envoy clients over real gRPC on 127.0.0.1
//! (SotW or Delta ADS), each with a locality, against the real server binary on a generated endpoints
//! file; it measures time to full config, convergence after endpoint changes (one at a time and under
//! churn), server CPU and memory, and bytes sent — and the same against a baseline server that builds
//! and encodes every client's answer on its own (`--no-shared-cache`).
//!
//! [`run`] is the library entry point (the binary `xds-load` and the e2e smoke test `load_smoke` call
//! it):
//!
//! 1. write the endpoints file ([`scenario`]) and start the server ([`spawn`]), wait for its first
//!    snapshot, note its idle RSS;
//! 2. open the clients' ADS streams ([`client`]): one HTTP/2 connection per client by default, as Envoy
//!    has, at most `connect_concurrency` connecting at once; time until every client holds every
//!    cluster, every cluster's endpoints, the listener and the routes;
//! 3. single changes: one endpoint of one service gets a unique address, the file is replaced
//!    atomically, and the time from the rename until the last client received a load assignment with
//!    that address is the change's convergence; the next change waits for the previous one;
//! 4. churn: `churn_rate` changes per second for `churn_seconds`, written in batches every
//!    `churn_write_interval_ms` (see [`Config::churn_write_interval_ms`]), each change timed the same way,
//!    server RSS sampled throughout;
//! 5. stop the clients and the server; repeat for the baseline and for the other protocol.
//!
//! [`suite::run`] runs all of that plus the reconnect storm ([`storm`]) and the scale-out across two
//! replicas ([`scaleout`]) and reports one table of targets (`xds-load --suite`, `scripts/bench.sh`).
//!
//! Also here, because the end-to-end harness (`e2e`, which depends on this crate) needs them too:
//! [`ports`] (free TCP ports), [`tmp`] (temporary directories), [`paths`] (workspace and target
//! directory) and [`tail`].

pub mod client;
pub mod kube;
pub mod paths;
pub mod ports;
pub mod procfs;
pub mod report;
pub(crate) mod run;
pub mod scaleout;
pub mod scenario;
pub mod spawn;
pub mod storm;
pub mod suite;
pub mod tmp;
pub mod wire;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::task::AbortHandle;

use client::{Change, Identity, Tracker};
use procfs::ProcSample;
use report::{Churn, Dist, Report, RunReport, Single};
use scenario::Scenario;
use spawn::ServerProcess;

/// ADS flavour of the simulated clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// State of the world (`StreamAggregatedResources`).
    Sotw,
    /// Incremental (`DeltaAggregatedResources`).
    Delta,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Sotw => "sotw",
            Protocol::Delta => "delta",
        }
    }
}

/// The server under test: as shipped, or with sharing turned off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Answers built and encoded once per (cluster, locality class) and shared.
    Shared,
    /// The server run with [`Config::baseline_flag`]: each client's answer built and encoded on its own.
    Baseline,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Shared => "shared",
            Mode::Baseline => "baseline",
        }
    }
}

/// What to run. [`Config::default`] is the target scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub clients: usize,
    pub services: usize,
    pub endpoints_per_service: usize,
    pub regions: usize,
    pub zones: usize,
    pub protocols: Vec<Protocol>,
    /// Single endpoint changes (each waits for the previous one to converge).
    pub changes: usize,
    /// Least time between two single changes.
    pub change_interval_ms: u64,
    /// Endpoint changes per second during the churn phase (0: no churn).
    pub churn_rate: f64,
    pub churn_seconds: f64,
    /// How often the churn rewrites the endpoints file, each write carrying the changes due since the
    /// last. 0 writes every change on its own. The file source only takes a file that reads the same
    /// twice 50 ms apart after 100 ms without events, so rewrites much faster than every ~150 ms
    /// starve it until they stop; 200 ms batches 10 changes per write at 50/s.
    pub churn_write_interval_ms: u64,
    /// Also run every protocol against the baseline server.
    pub baseline: bool,
    /// Run the churn against the baseline server too (by default it runs full config and single
    /// changes only).
    pub baseline_churn: bool,
    /// The server flag that turns sharing off.
    pub baseline_flag: String,
    pub server_bin: PathBuf,
    /// Clients multiplexed on one HTTP/2 connection (1: a connection per client, as Envoy).
    pub clients_per_connection: usize,
    /// Connections being opened at once.
    pub connect_concurrency: usize,
    /// How long the clients may take to get their first full config.
    pub initial_timeout_s: u64,
    /// How long one change may take to converge before it counts as missed.
    pub change_timeout_s: u64,
    /// Progress on stderr.
    pub progress: bool,
    /// The file source's endpoints file as JSON instead of YAML.
    pub endpoints_json: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            clients: 5000,
            services: 500,
            endpoints_per_service: 12,
            regions: 3,
            zones: 3,
            protocols: vec![Protocol::Sotw, Protocol::Delta],
            changes: 20,
            change_interval_ms: 1000,
            churn_rate: 50.0,
            churn_seconds: 60.0,
            churn_write_interval_ms: 200,
            baseline: true,
            baseline_churn: false,
            baseline_flag: "--no-shared-cache".into(),
            server_bin: default_server_bin(),
            clients_per_connection: 1,
            connect_concurrency: 256,
            initial_timeout_s: 300,
            change_timeout_s: 30,
            progress: true,
            endpoints_json: false,
        }
    }
}

impl Config {
    /// The scenario the issue states its targets for.
    pub fn is_target_scenario(&self) -> bool {
        self.clients == 5000
            && self.services == 500
            && self.endpoints_per_service == 12
            && self.regions == 3
            && self.zones == 3
            && self.churn_rate == 50.0
            && self.churn_seconds == 60.0
    }
}

/// `$XDS_SERVER_BIN`, else `<target>/release/xds-server`.
pub fn default_server_bin() -> PathBuf {
    match std::env::var_os("XDS_SERVER_BIN").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => crate::paths::target_dir().join("release/xds-server"),
    }
}

/// The last `n` lines of a text, for failure messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

/// Runs every configured protocol, each against the shared server and (if configured) the baseline.
pub async fn run(config: &Config) -> anyhow::Result<Report> {
    preflight(config)?;
    let machine = procfs::Machine::detect();
    let mut runs = Vec::new();
    for &protocol in &config.protocols {
        runs.push(run_one(config, protocol, Mode::Shared).await?);
        if config.baseline {
            runs.push(run_one(config, protocol, Mode::Baseline).await?);
        }
    }
    Ok(Report {
        machine,
        config: config.clone(),
        ratios: report::ratios(&runs),
        targets: report::targets(&runs),
        target_scenario: config.is_target_scenario(),
        runs,
    })
}

/// Checks that the server binary exists and that the open-files limit allows every connection (raising
/// it if it can).
pub(crate) fn preflight(config: &Config) -> anyhow::Result<()> {
    if !config.server_bin.is_file() {
        bail!(
            "no xds-server binary at {} (build it: cargo build --release -p xds-server, or pass \
             --server-bin / set XDS_SERVER_BIN)",
            config.server_bin.display()
        );
    }
    if config.clients == 0 || config.clients_per_connection == 0 {
        bail!("need at least one client and one client per connection");
    }
    // Each connection is a socket here and one in the server (which inherits this limit).
    let connections = config.clients.div_ceil(config.clients_per_connection);
    let wanted = connections as u64 + 256;
    let limit = procfs::raise_fd_limit(wanted);
    if limit < wanted {
        bail!(
            "{connections} connections need about {wanted} open files, the limit is {limit} (ulimit -n); \
             raise it or share connections (--clients-per-connection)"
        );
    }
    Ok(())
}

macro_rules! progress {
    ($cfg:expr, $($arg:tt)*) => {
        crate::say($cfg, format!($($arg)*))
    };
}

/// A progress line on stderr, when the run reports progress.
pub(crate) fn say(config: &Config, line: impl AsRef<str>) {
    if config.progress {
        eprintln!("xds-load: {}", line.as_ref());
    }
}

/// The server's RSS and CPU, sampled every 250 ms for the whole run.
pub(crate) struct Sampler {
    samples: Arc<Mutex<Vec<(Instant, ProcSample)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub(crate) fn start(pid: u32) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let out = samples.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let Some(s) = procfs::sample(pid) else { return };
                out.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((Instant::now(), s));
            }
        });
        Sampler { samples, task }
    }

    pub(crate) fn between(&self, from: Instant, to: Instant) -> Vec<ProcSample> {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|(_, s)| *s)
            .collect()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A write of the scenario to the server's source, made on a blocking thread; returns when the write
/// took effect (the moment changes are timed from), monotonic and wall clock.
pub(crate) type SourceWrite = Box<dyn FnOnce() -> anyhow::Result<(Instant, SystemTime)> + Send>;

/// Where the changes go: the endpoints file ([`EndpointsFile`]) or the test Kubernetes API server
/// ([`kube`]).
pub(crate) trait ChangeSink: Send + Sync {
    /// The write that publishes `scenario` after `clusters` changed.
    fn write(&self, scenario: &Scenario, clusters: &[u32]) -> SourceWrite;
}

/// The file source: the whole file rewritten and renamed into place.
pub(crate) struct EndpointsFile(pub PathBuf);

impl ChangeSink for EndpointsFile {
    fn write(&self, scenario: &Scenario, _clusters: &[u32]) -> SourceWrite {
        let (content, path) = (scenario.render(), self.0.clone());
        Box::new(move || {
            scenario::write_atomically(&path, content.as_bytes())
                .context("writing the endpoints file")
        })
    }
}

/// Makes endpoint changes: picks clusters, registers the changes, writes them to the source.
pub(crate) struct Changer {
    pub(crate) scenario: Scenario,
    pub(crate) sink: Box<dyn ChangeSink>,
    pub(crate) next_id: u32,
    /// Changes made per cluster: the next one rewrites endpoint `count % endpoints_per_service`.
    pub(crate) counts: Vec<u32>,
    pub(crate) rng: u64,
}

impl Changer {
    pub(crate) fn new(scenario: Scenario, sink: Box<dyn ChangeSink>) -> Self {
        Changer {
            counts: vec![0; scenario.services],
            scenario,
            sink,
            next_id: 1,
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    fn next_slot(&self, cluster: u32) -> usize {
        self.counts[cluster as usize] as usize % self.scenario.endpoints_per_service
    }

    /// A random cluster, not in `exclude`, whose next endpoint slot has no change in flight.
    pub(crate) fn pick(&mut self, tracker: &Tracker, exclude: &[u32]) -> Option<u32> {
        // xorshift64: deterministic, no dependency.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let n = tracker.clusters();
        let start = (self.rng % n as u64) as usize;
        (0..n)
            .map(|k| ((start + k) % n) as u32)
            .find(|&c| !exclude.contains(&c) && tracker.slot_free(c, self.next_slot(c)))
    }

    /// Changes one endpoint of each cluster (a cluster named k times: its next k endpoints) and writes
    /// them to the source at once; the changes are timed from the write.
    pub(crate) async fn apply(
        &mut self,
        tracker: &Arc<Tracker>,
        clusters: &[u32],
    ) -> anyhow::Result<Vec<Arc<Change>>> {
        // Every client with full config holds every cluster's endpoints, so each must receive it.
        let affected = tracker.complete.load(Ordering::Acquire);
        let mut changes = Vec::with_capacity(clusters.len());
        for &cluster in clusters {
            let id = self.next_id;
            self.next_id += 1;
            let marker = scenario::marker_ip(id);
            let slot = self.next_slot(cluster);
            self.counts[cluster as usize] += 1;
            self.scenario
                .set_address(cluster as usize, slot, marker.clone());
            let change = Arc::new(Change::new(id, cluster, slot, marker, affected));
            tracker.register(change.clone());
            changes.push(change);
        }
        let write = self.sink.write(&self.scenario, clusters);
        let (at, wall) = tokio::task::spawn_blocking(write).await??;
        for c in &changes {
            c.applied_ns.store(tracker.ns_of(at), Ordering::Release);
            let _ = c.applied_wall.set(wall);
        }
        Ok(changes)
    }
}

/// Waits until `done` or `timeout`, failing early if the server died.
pub(crate) async fn wait_until(
    server: &mut ServerProcess,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return Ok(true);
        }
        if !server.is_running() {
            bail!(
                "xds-server exited during the run; its log:\n{}",
                crate::tail(&server.log(), 40)
            );
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub(crate) fn convergence(changes: &[Arc<Change>]) -> (usize, Option<Dist>, Vec<usize>) {
    let times: Vec<u64> = changes.iter().filter_map(|c| c.convergence_ns()).collect();
    let missing = changes
        .iter()
        .filter(|c| !c.converged())
        .map(|c| c.remaining.load(Ordering::Acquire))
        .collect();
    (times.len(), Dist::of_ns(times.iter().copied()), missing)
}

/// Opens every client's stream; returns their abort handles (filled in as they start).
pub(crate) fn spawn_clients(
    config: &Config,
    tracker: &Arc<Tracker>,
    scenario: &Scenario,
    url: String,
    protocol: Protocol,
) -> Arc<Mutex<Vec<AbortHandle>>> {
    let handles = Arc::new(Mutex::new(Vec::with_capacity(config.clients + 64)));
    let gate = Arc::new(tokio::sync::Semaphore::new(
        config.connect_concurrency.max(1),
    ));
    let per = config.clients_per_connection;
    for group in 0..config.clients.div_ceil(per) {
        let members: Vec<Identity> = (group * per..((group + 1) * per).min(config.clients))
            .map(|index| {
                let (r, z) = scenario.locality(index);
                Identity {
                    index,
                    region: scenario::region_name(r),
                    zone: scenario::zone_name(r, z),
                }
            })
            .collect();
        let (tracker, gate, url, list) =
            (tracker.clone(), gate.clone(), url.clone(), handles.clone());
        let task = tokio::spawn(async move {
            let Ok(_permit) = gate.acquire_owned().await else {
                return;
            };
            let endpoint = match tonic::transport::Endpoint::from_shared(url) {
                Ok(e) => e.tcp_nodelay(true).connect_timeout(Duration::from_secs(10)),
                Err(e) => {
                    for m in &members {
                        tracker.fail(m.index, format!("bad URL: {e}"));
                    }
                    return;
                }
            };
            // A connect can fail when thousands arrive at once (listen backlog); retry as Envoy would.
            let mut attempt = 0;
            let channel = loop {
                match endpoint.connect().await {
                    Ok(c) => break c,
                    Err(e) if attempt >= 5 => {
                        for m in &members {
                            tracker.fail(m.index, format!("connect: {e}"));
                        }
                        return;
                    }
                    Err(_) => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                    }
                }
            };
            let mut opened = Vec::with_capacity(members.len());
            for m in members {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let h = tokio::spawn(client::run_client(
                    tracker.clone(),
                    channel.clone(),
                    protocol,
                    m,
                    tx,
                ));
                list.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(h.abort_handle());
                opened.push(rx);
            }
            // Hold the connect slot until the streams are open.
            for rx in opened {
                let _ = rx.await;
            }
        });
        handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task.abort_handle());
    }
    handles
}

async fn run_one(config: &Config, protocol: Protocol, mode: Mode) -> anyhow::Result<RunReport> {
    let name = format!("{}/{}", protocol.name(), mode.name());
    let start = run::RunStart::now();
    let dir = crate::tmp::TempDir::new("load");
    let (scenario, endpoints) = run::scenario_file(config, dir.path())?;
    let extra = match mode {
        Mode::Shared => Vec::new(),
        Mode::Baseline => vec![config.baseline_flag.clone()],
    };
    let mut server = ServerProcess::start(
        &config.server_bin,
        &endpoints,
        &dir.join("xds-server.log"),
        &extra,
    )?;
    server.wait_ready(Duration::from_secs(120)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = server.sample().context("sampling the server")?;
    let sampler = Sampler::start(server.pid());
    progress!(
        config,
        "{name}: server ready (idle RSS {:.1} MiB); connecting {} clients",
        idle.rss as f64 / (1 << 20) as f64,
        config.clients
    );

    // Phase 1: every client's first full config.
    let connected =
        run::connect_all(config, &name, &mut server, &scenario, protocol, &idle).await?;
    let mut changer = Changer::new(scenario, Box::new(EndpointsFile(endpoints.clone())));
    // The baseline runs full config and single changes only, unless told otherwise.
    let churn = (mode == Mode::Shared || config.baseline_churn).then_some(config);
    let phases = run::changes(
        config,
        &name,
        &mut server,
        &connected,
        &mut changer,
        &sampler,
        churn,
    )
    .await?;
    Ok(run::finish(
        config,
        &name,
        server,
        connected,
        start,
        idle,
        (protocol, mode),
        phases,
    )
    .await)
}

/// Single changes: one endpoint at a time, each waiting for the previous one to converge; convergence
/// split into the floor (write → the server published a snapshot) and the push (published → the last
/// client).
pub(crate) async fn single_changes(
    config: &Config,
    name: &str,
    server: &mut ServerProcess,
    tracker: &Arc<Tracker>,
    changer: &mut Changer,
    timeout: Duration,
) -> anyhow::Result<Option<Single>> {
    let cpu_before = server.sample().unwrap_or_default().cpu_s;
    let loadgen_before = procfs::sample_self().cpu_s;
    let bytes_before = tracker.bytes.load(Ordering::Relaxed);
    let mut changes = Vec::new();
    for k in 0..config.changes {
        let Some(cluster) = changer.pick(tracker, &[]) else {
            break;
        };
        let started = Instant::now();
        let change = changer.apply(tracker, &[cluster]).await?.remove(0);
        let ok = wait_until(server, timeout, || change.converged()).await?;
        if !ok {
            tracker.retire(&change);
        }
        progress!(
            config,
            "{name}: change {}/{}: {}",
            k + 1,
            config.changes,
            change.convergence_ns().map_or_else(
                || format!(
                    "NOT converged, {} clients missing",
                    change.remaining.load(Ordering::Acquire)
                ),
                |ns| format!("{:.0} ms", ns as f64 / 1e6)
            )
        );
        changes.push(change);
        let next = (started + Duration::from_millis(config.change_interval_ms))
            .max(Instant::now() + Duration::from_millis(200));
        tokio::time::sleep_until(next.into()).await;
    }
    let (converged, dist, missing_clients) = convergence(&changes);
    // The floor: rename → the first snapshot published after it.
    let publishes = server.publishes();
    let reloads = server.reloads();
    let mut floors = Vec::new();
    let mut reload_times = Vec::new();
    let mut pushes = Vec::new();
    for c in &changes {
        let Some(wall) = c.applied_wall.get() else {
            continue;
        };
        if let Some(r) = reloads.iter().find(|r| *r >= wall) {
            reload_times.push(r.duration_since(*wall).unwrap_or_default().as_nanos() as u64);
        }
        let Some(p) = publishes.iter().find(|p| p.at >= *wall) else {
            continue;
        };
        let floor = p.at.duration_since(*wall).unwrap_or_default().as_nanos() as u64;
        floors.push(floor);
        if let Some(conv) = c.convergence_ns() {
            pushes.push(conv.saturating_sub(floor));
        }
    }
    Ok(Some(Single {
        changes: changes.len(),
        converged,
        convergence: dist,
        first_ms: changes
            .first()
            .and_then(|c| c.convergence_ns())
            .map(|ns| ns as f64 / 1e6),
        after_first: Dist::of_ns(changes.iter().skip(1).filter_map(|c| c.convergence_ns())),
        each_ms: changes
            .iter()
            .map(|c| c.convergence_ns().map(|ns| ns as f64 / 1e6))
            .collect(),
        publish_floor: Dist::of_ns(floors),
        file_reload: Dist::of_ns(reload_times),
        push: Dist::of_ns(pushes),
        missing_clients,
        bytes: tracker.bytes.load(Ordering::Relaxed) - bytes_before,
        server_cpu_s: server.sample().unwrap_or_default().cpu_s - cpu_before,
        loadgen_cpu_s: procfs::sample_self().cpu_s - loadgen_before,
    }))
}

/// Churn: `churn_rate` changes per second for `churn_seconds`, each timed; server RSS from `sampler`.
pub(crate) async fn churn(
    config: &Config,
    name: &str,
    server: &mut ServerProcess,
    tracker: &Arc<Tracker>,
    changer: &mut Changer,
    sampler: &Sampler,
    timeout: Duration,
) -> anyhow::Result<Churn> {
    progress!(
        config,
        "{name}: churn {}/s for {} s",
        config.churn_rate,
        config.churn_seconds
    );
    let before = server.sample().unwrap_or_default();
    let loadgen_before = procfs::sample_self().cpu_s;
    let bytes_before = tracker.bytes.load(Ordering::Relaxed);
    let publishes_before = server.publishes().len();
    let period = if config.churn_write_interval_ms == 0 {
        Duration::from_secs_f64(1.0 / config.churn_rate)
    } else {
        Duration::from_millis(config.churn_write_interval_ms)
    };
    let length = Duration::from_secs_f64(config.churn_seconds);
    let start = Instant::now();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut made, mut skipped) = (0usize, 0usize);
    let mut changes = Vec::new();
    let mut last_progress = Instant::now();
    loop {
        tick.tick().await;
        let elapsed = start.elapsed();
        if elapsed >= length {
            break;
        }
        let due = (config.churn_rate * elapsed.as_secs_f64()).ceil() as usize;
        let mut picks = Vec::new();
        while made + skipped + picks.len() < due {
            match changer.pick(tracker, &picks) {
                Some(c) => picks.push(c),
                None => skipped += 1,
            }
        }
        if !picks.is_empty() {
            made += picks.len();
            changes.extend(changer.apply(tracker, &picks).await?);
        }
        if !server.is_running() {
            bail!(
                "xds-server exited during the churn; its log:\n{}",
                crate::tail(&server.log(), 40)
            );
        }
        if config.progress && last_progress.elapsed() > Duration::from_secs(5) {
            last_progress = Instant::now();
            let (converged, dist, _) = convergence(&changes);
            eprintln!(
                "xds-load: {name}: churn {:.0} s: {made} changes, {converged} converged, p99 {}",
                elapsed.as_secs_f64(),
                dist.map_or("-".into(), |d| format!("{:.0} ms", d.p99_ms))
            );
        }
    }
    let end = Instant::now();
    wait_until(server, timeout, || changes.iter().all(|c| c.converged())).await?;
    for c in &changes {
        if !c.converged() {
            tracker.retire(c);
        }
    }
    let after = server.sample().unwrap_or_default();
    let loadgen_after = procfs::sample_self().cpu_s;
    let samples = sampler.between(start, end);
    let rss = |f: f64| {
        samples
            .get(((samples.len() as f64 - 1.0) * f).round().max(0.0) as usize)
            .map_or(0, |s| s.rss)
    };
    let (converged, dist, missing_clients) = convergence(&changes);
    let seconds = (end - start).as_secs_f64();
    Ok(Churn {
        rate_per_s: config.churn_rate,
        seconds,
        write_interval_ms: period.as_secs_f64() * 1e3,
        offered: made + skipped,
        changes: changes.len(),
        converged,
        skipped,
        convergence: dist,
        publishes: server.publishes().len() - publishes_before,
        rss_start: rss(0.0),
        rss_mid: rss(0.5),
        rss_end: rss(1.0),
        rss_max: samples.iter().map(|s| s.rss).max().unwrap_or(0),
        server_cpu_s: after.cpu_s - before.cpu_s,
        server_cores: (after.cpu_s - before.cpu_s) / seconds,
        loadgen_cores: (loadgen_after - loadgen_before) / seconds,
        bytes: tracker.bytes.load(Ordering::Relaxed) - bytes_before,
        missing_clients,
    })
}
