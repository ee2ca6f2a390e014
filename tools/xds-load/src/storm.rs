//! Reconnect storm: every client holds its full config, the server is killed (SIGKILL, as a crashed or
//! evicted pod) and a fresh one starts on the same address; every client reconnects with its usual
//! backoff. The clients are the scale-out's ([`crate::scaleout`]) with one server behind the "Service":
//! each stream on a new connection of its own, as Envoy opens one (a tonic `Channel` left to reconnect
//! by itself left some clients hanging for good after the kill), after Envoy's jittered exponential
//! backoff (250 ms base, 5 s cap).
//!
//! Measured: the new server's start (spawn) → every client holds its full config again on a stream to
//! the new server; the new server's peak RSS and memory per client; and every response the clients get
//! is checked for what a warming-up server must never send ([`crate::client::Tracker::violations`]: a
//! CDS answer with fewer clusters than the scenario has, a load assignment without endpoints, listener
//! or routes missing). The server waits for a complete snapshot before it answers, so the count must
//! be 0.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde::Serialize;

use crate::client::Tracker;
use crate::report::Dist;
use crate::spawn::ServerProcess;
use crate::suite::{Goal, Row};
use crate::{procfs, Config, Protocol};

/// How big a storm, on top of the scenario of a [`Config`] (services, localities, server binary).
#[derive(Debug, Clone, Serialize)]
pub struct StormSettings {
    pub clients: usize,
    /// How long the clients may take to get their full config, first and again.
    pub timeout_s: u64,
}

/// One storm, one protocol.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StormReport {
    pub protocol: String,
    pub clients: usize,
    /// First connect → every client holds its full config, on the first server.
    pub first_full_config_s: Option<f64>,
    /// Clients that hold their full config again on the new server.
    pub resynced: usize,
    /// New server started (spawned) → the last client holds its full config again (`None`: not all
    /// did within the timeout).
    pub resync_all_s: Option<f64>,
    /// Per client: new server started → full config again.
    pub resync_per_client: Option<Dist>,
    /// New server started → it logged its first complete snapshot (before that it answers nothing).
    pub new_server_ready_s: Option<f64>,
    /// The new server's peak RSS (VmHWM) with every client reconnected, bytes.
    pub peak_rss: u64,
    /// The new server's RSS with every client back (after a 1 s settle), bytes.
    pub connected_rss: u64,
    /// RSS of the first server with its snapshot built and no client: the idle figure (the new server
    /// is never idle), bytes.
    pub idle_rss: u64,
    /// (connected − idle) / clients, bytes.
    pub per_client_bytes: f64,
    /// Empty or partial responses after the kill (must be 0), and the first one.
    pub violations: u64,
    pub first_violation: Option<String>,
    /// Empty or partial responses before the kill (also must be 0).
    pub violations_before: u64,
    /// Streams that failed (every client's stream fails at the kill; refused connects are not
    /// streams and are not counted).
    pub stream_failures: u64,
    pub loadavg_start: f64,
    pub loadavg_end: f64,
}

impl StormReport {
    /// The suite's rows for this storm.
    pub fn rows(&self) -> Vec<Row> {
        let s = format!("storm/{} ({} clients)", self.protocol, self.clients);
        vec![
            Row::new(
                &s,
                "new server start → every client full config again",
                Goal::Below(15.0),
                "s",
                self.resync_all_s,
            ),
            Row::new(
                &s,
                "empty or partial responses after reconnect",
                Goal::AtMost(0.0),
                "",
                Some(self.violations as f64),
            ),
            Row::new(
                &s,
                "new server peak RSS",
                Goal::Below(1024.0),
                "MiB",
                (self.peak_rss > 0).then(|| self.peak_rss as f64 / (1 << 20) as f64),
            ),
            Row::new(
                &s,
                "new server memory per client",
                Goal::Report,
                "KiB",
                (self.connected_rss > 0).then(|| self.per_client_bytes / 1024.0),
            ),
        ]
    }
}

macro_rules! progress {
    ($cfg:expr, $($arg:tt)*) => {
        if $cfg.progress {
            eprintln!("xds-load: storm: {}", format!($($arg)*));
        }
    };
}

/// Runs the storm once per protocol of `config`.
pub async fn run(config: &Config, settings: &StormSettings) -> anyhow::Result<Vec<StormReport>> {
    let mut out = Vec::new();
    for &protocol in &config.protocols {
        out.push(run_one(config, settings, protocol).await?);
    }
    Ok(out)
}

async fn run_one(
    config: &Config,
    settings: &StormSettings,
    protocol: Protocol,
) -> anyhow::Result<StormReport> {
    let config = Config {
        clients: settings.clients,
        ..config.clone()
    };
    let name = protocol.name();
    let loadavg_start = procfs::loadavg();
    let dir = crate::tmp::TempDir::new("storm");
    let (scenario, endpoints) = crate::run::scenario_file(&config, dir.path())?;
    let mut first = ServerProcess::start(
        &config.server_bin,
        &endpoints,
        &dir.join("xds-server-1.log"),
        &[],
    )?;
    first.wait_ready(Duration::from_secs(120)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = first.sample().context("sampling the server")?;
    let timeout = Duration::from_secs(settings.timeout_s);

    progress!(config, "{name}: connecting {} clients", config.clients);
    let tracker = Tracker::new(config.clients, &scenario.cluster_names());
    let (_shared, tasks) = crate::scaleout::spawn_clients(
        &tracker,
        &scenario,
        vec![first.url()],
        protocol,
        config.connect_concurrency,
    );
    crate::wait_until(&mut first, timeout, || {
        tracker.complete.load(Ordering::Acquire) >= config.clients
    })
    .await?;
    let first_full_config_s = tracker
        .completion_times()
        .into_iter()
        .collect::<Option<Vec<u64>>>()
        .map(|t| t.into_iter().max().unwrap_or(0) as f64 / 1e9);
    let violations_before = tracker.violations.load(Ordering::Acquire);
    progress!(
        config,
        "{name}: {} clients with full config; SIGKILL to the server",
        tracker.complete.load(Ordering::Acquire)
    );

    let port = first.port;
    first.kill();
    // The replacement starts at once, as a restarted container does; clients already retrying find a
    // closed port until it listens and no answer until its first snapshot is complete.
    let start_ns = tracker.now_ns();
    let start_wall = SystemTime::now();
    let mut server = ServerProcess::start_on(
        port,
        &config.server_bin,
        &endpoints,
        &dir.join("xds-server-2.log"),
        &[],
    )?;
    let all = crate::run::wait_for_clients(
        &config,
        &mut server,
        timeout,
        &format!(
            "storm: {name}: {{}}/{} clients with full config again",
            config.clients
        ),
        &tracker,
        || tracker.synced_since(start_ns),
    )
    .await?;
    let times: Vec<u64> = (0..config.clients)
        .filter_map(|i| tracker.stream_synced_at(i))
        .filter(|&t| t >= start_ns)
        .map(|t| t - start_ns)
        .collect();
    let resync_all_s = all.then(|| times.iter().max().copied().unwrap_or(0) as f64 / 1e9);
    progress!(
        config,
        "{name}: {}/{} clients with full config again{}",
        times.len(),
        config.clients,
        resync_all_s.map_or(String::new(), |s| format!(" in {s:.2} s"))
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let connected = server.sample().unwrap_or_default();
    let new_server_ready_s = ready_at(&server.log())
        .and_then(|t| t.duration_since(start_wall).ok().map(|d| d.as_secs_f64()));

    tracker.stop();
    server.kill();
    for t in &tasks {
        t.abort();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let violations_total = tracker.violations.load(Ordering::Acquire);
    Ok(StormReport {
        protocol: name.into(),
        clients: config.clients,
        first_full_config_s,
        resynced: times.len(),
        resync_all_s,
        resync_per_client: Dist::of_ns(times.iter().copied()),
        new_server_ready_s,
        peak_rss: connected.hwm,
        connected_rss: connected.rss,
        idle_rss: idle.rss,
        per_client_bytes: (connected.rss as f64 - idle.rss as f64) / config.clients as f64,
        violations: violations_total - violations_before,
        first_violation: tracker.first_violation(),
        violations_before,
        stream_failures: tracker.failures.load(Ordering::Relaxed),
        loadavg_start,
        loadavg_end: procfs::loadavg(),
    })
}

/// When the server logged its first complete snapshot.
fn ready_at(log: &str) -> Option<SystemTime> {
    log.lines()
        .find(|l| l.contains(crate::spawn::READY_LINE))
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| crate::spawn::parse_rfc3339(v.get("timestamp")?.as_str()?))
}
