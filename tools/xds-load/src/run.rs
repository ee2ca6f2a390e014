//! What every measured run shares, whatever its source or scenario: the scenario's endpoints file,
//! the run's starting figures, connecting every client and waiting for their full config, and the
//! tail that stops everything and puts the report together.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::AbortHandle;

use crate::client::Tracker;
use crate::procfs::{self, ProcSample};
use crate::report::{Churn, Dist, Initial, RunReport, ServerFigures, Single};
use crate::scenario::{self, Scenario};
use crate::spawn::ServerProcess;
use crate::{Changer, Config, Mode, Protocol, Sampler};

/// The configured scenario, written as an endpoints file in `dir`.
pub(crate) fn scenario_file(config: &Config, dir: &Path) -> anyhow::Result<(Scenario, PathBuf)> {
    let mut scenario = Scenario::new(
        config.services,
        config.endpoints_per_service,
        config.regions,
        config.zones,
    );
    scenario.json = config.endpoints_json;
    let endpoints = dir.join(if scenario.json {
        "endpoints.json"
    } else {
        "endpoints.yaml"
    });
    scenario::write_atomically(&endpoints, scenario.render().as_bytes())?;
    Ok((scenario, endpoints))
}

/// What a run notes as it starts, for its report.
pub(crate) struct RunStart {
    at: Instant,
    loadavg: f64,
    loadgen: ProcSample,
}

impl RunStart {
    pub(crate) fn now() -> Self {
        RunStart {
            at: Instant::now(),
            loadavg: procfs::loadavg(),
            loadgen: procfs::sample_self(),
        }
    }
}

/// Every client connected, and how long their first full config took.
pub(crate) struct Connected {
    pub tracker: Arc<Tracker>,
    pub handles: Arc<Mutex<Vec<AbortHandle>>>,
    pub initial: Initial,
    /// The server's figures one second after the last client got its config.
    pub sample: ProcSample,
}

/// Opens every client's stream (as Envoy: see [`crate::spawn_clients`]) and waits until each holds its
/// full config or the configured timeout passes, reporting progress every 2 s.
pub(crate) async fn connect_all(
    config: &Config,
    name: &str,
    server: &mut ServerProcess,
    scenario: &Scenario,
    protocol: Protocol,
    idle: &ProcSample,
) -> anyhow::Result<Connected> {
    let tracker = Tracker::new(config.clients, &scenario.cluster_names());
    let t0 = tracker.now_ns();
    let handles = crate::spawn_clients(config, &tracker, scenario, server.url(), protocol);
    let all = wait_for_clients(
        config,
        server,
        Duration::from_secs(config.initial_timeout_s),
        &format!("{name}: {{}}/{} clients with full config", config.clients),
        &tracker,
        || tracker.complete.load(Ordering::Acquire),
    )
    .await?;
    let after_initial = server.sample().unwrap_or_default();
    let completion: Vec<u64> = tracker
        .completion_times()
        .into_iter()
        .flatten()
        .map(|t| t.saturating_sub(t0))
        .collect();
    let complete = completion.len();
    let initial = Initial {
        complete,
        all_s: (complete == config.clients)
            .then(|| completion.iter().max().copied().unwrap_or(0) as f64 / 1e9),
        per_client: Dist::of_ns(completion.iter().copied()),
        bytes: tracker.bytes.load(Ordering::Relaxed),
        responses: tracker.responses.load(Ordering::Relaxed),
        server_cpu_s: after_initial.cpu_s - idle.cpu_s,
    };
    crate::say(
        config,
        format!(
            "{name}: {complete}/{} clients with full config{}",
            config.clients,
            initial
                .all_s
                .map_or(String::new(), |s| format!(" in {s:.2} s"))
        ),
    );
    if !all {
        crate::say(
            config,
            format!(
                "{name}: gave up waiting after {} s",
                config.initial_timeout_s
            ),
        );
    }
    // Let the initial burst's buffers drain before taking the connected RSS.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sample = server.sample().unwrap_or_default();
    Ok(Connected {
        tracker,
        handles,
        initial,
        sample,
    })
}

/// Waits until `count()` reaches `config.clients` or `timeout` passes, failing early if the server
/// died; every 2 s prints `line` with `{}` replaced by the count, and the streams open.
pub(crate) async fn wait_for_clients(
    config: &Config,
    server: &mut ServerProcess,
    timeout: Duration,
    line: &str,
    tracker: &Tracker,
    count: impl Fn() -> usize,
) -> anyhow::Result<bool> {
    let mut last_progress = Instant::now();
    crate::wait_until(server, timeout, || {
        let done = count();
        if config.progress && last_progress.elapsed() > Duration::from_secs(2) {
            last_progress = Instant::now();
            eprintln!(
                "xds-load: {}, {} streams open",
                line.replacen("{}", &done.to_string(), 1),
                tracker.live.load(Ordering::Acquire)
            );
        }
        done >= config.clients
    })
    .await
}

/// What a run measured, phase by phase.
pub(crate) struct Phases {
    pub single: Option<Single>,
    pub churn: Option<Churn>,
    /// The server's figures between the single changes and the churn.
    pub before_churn: ProcSample,
}

/// Single changes, then the churn under `churn` (its own settings; `None`: no churn), each only if
/// configured and some client holds its config.
pub(crate) async fn changes(
    config: &Config,
    name: &str,
    server: &mut ServerProcess,
    connected: &Connected,
    changer: &mut Changer,
    sampler: &Sampler,
    churn: Option<&Config>,
) -> anyhow::Result<Phases> {
    let tracker = &connected.tracker;
    let some_complete = connected.initial.complete > 0;
    let timeout = Duration::from_secs(config.change_timeout_s);
    let single = if config.changes > 0 && some_complete {
        crate::single_changes(config, name, server, tracker, changer, timeout).await?
    } else {
        None
    };
    let before_churn = server.sample().unwrap_or_default();
    let churn = match churn {
        Some(c) if c.churn_rate > 0.0 && c.churn_seconds > 0.0 && some_complete => {
            Some(crate::churn(c, name, server, tracker, changer, sampler, timeout).await?)
        }
        _ => None,
    };
    Ok(Phases {
        single,
        churn,
        before_churn,
    })
}

/// The tail every run shares: the server's last figures and warnings, the clients and the server
/// stopped, and the report.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn finish(
    config: &Config,
    name: &str,
    mut server: ServerProcess,
    connected: Connected,
    start: RunStart,
    idle: ProcSample,
    (protocol, mode): (Protocol, Mode),
    phases: Phases,
) -> RunReport {
    let last = server.sample().unwrap_or_default();
    let cache = server.cache_stats();
    let warnings = server.warnings();
    for w in warnings.iter().take(5) {
        crate::say(config, format!("{name}: server warning: {w}"));
    }
    let Connected {
        tracker,
        handles,
        initial,
        sample: connected,
    } = connected;
    tracker.stop();
    server.kill();
    for h in handles.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        h.abort();
    }
    let loadgen = procfs::sample_self();
    let report = RunReport {
        protocol,
        mode,
        clients: config.clients,
        connections: config.clients.div_ceil(config.clients_per_connection),
        initial,
        single: phases.single,
        churn: phases.churn,
        server: ServerFigures {
            idle_rss: idle.rss,
            connected_rss: connected.rss,
            per_client_bytes: (connected.rss as f64 - idle.rss as f64) / config.clients as f64,
            peak_rss: last.hwm,
            peak_rss_before_churn: phases.before_churn.hwm,
            cpu_s: last.cpu_s,
            warnings: warnings.len(),
            cache,
        },
        bytes_total: tracker.bytes.load(Ordering::Relaxed),
        responses_total: tracker.responses.load(Ordering::Relaxed),
        loadgen_cpu_s: loadgen.cpu_s - start.loadgen.cpu_s,
        loadgen_peak_rss: loadgen.hwm,
        stream_failures: tracker.failures.load(Ordering::Relaxed),
        first_failure: tracker.first_failure(),
        seconds: start.at.elapsed().as_secs_f64(),
        loadavg_start: start.loadavg,
        loadavg_end: procfs::loadavg(),
    };
    // Give aborted client tasks a moment to drop their connections before the next run.
    tokio::time::sleep(Duration::from_millis(500)).await;
    report
}
