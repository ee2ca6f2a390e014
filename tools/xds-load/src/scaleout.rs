//! Scale-out: two server replicas on this machine (two ports, one endpoints file), both started with
//! `--max-connection-age` and its grace, and clients spread over them as a Kubernetes Service spreads
//! connections: each new connection goes to a ready replica picked at random, and a refused connection
//! tries again (a new random pick) after the client's backoff.
//!
//! 1. every client connects and gets its full config; the split is recorded;
//! 2. one replica is killed (SIGKILL) and taken out of the ready set, as its endpoint leaves the
//!    Service: measured is the kill → every client is on the other replica *and* holds its full config
//!    there;
//! 3. the replica is restarted on its port and joins the ready set once it serves (a readiness probe):
//!    nothing moves clients back but their connections' maximum age (±10% per connection, the server's
//!    jitter), so the split is sampled every [`ScaleoutSettings::sample_every_s`] for one age period
//!    (+ jitter + grace) and the restarted replica's share is reported.
//!
//! Each client's replica is recorded over time (every connection it opens), and every response is
//! checked as in the storm ([`crate::client::Tracker::violations`]).
//!
//! The clients' backoff here is Envoy's for a gRPC stream: a jittered exponential backoff (250 ms base,
//! 5 s cap, a random wait up to the current bound) that is reset once a stream delivered the config.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::client::{self, ClientState, Identity, Tracker};
use crate::scenario::{self, Scenario};
use crate::spawn::ServerProcess;
use crate::suite::{Goal, Row};
use crate::{procfs, Config, Protocol};

/// No replica: the client is between connections.
const NONE: u8 = u8::MAX;
const REPLICAS: usize = 2;

/// How big a scale-out run, on top of the scenario of a [`Config`].
#[derive(Debug, Clone, Serialize)]
pub struct ScaleoutSettings {
    pub clients: usize,
    /// `--max-connection-age` of both replicas, seconds.
    pub max_connection_age_s: f64,
    /// `--max-connection-age-grace`, seconds.
    pub grace_s: f64,
    /// How often the split is reported after the restart, seconds (it is sampled every 250 ms).
    pub sample_every_s: f64,
    /// How long the clients may take to get their full config, first and after the kill.
    pub timeout_s: u64,
}

/// Where the clients are at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Split {
    /// Seconds since the restarted replica was started.
    pub t_s: f64,
    /// Clients with a connection to each replica (replica 0 is the one killed and restarted).
    pub on: [usize; REPLICAS],
    /// Of those, clients holding their full config on that connection.
    pub synced: [usize; REPLICAS],
    /// Clients between connections.
    pub connecting: usize,
}

impl Split {
    /// Share of the connected clients on replica 0, in percent.
    pub fn share_restarted(&self) -> f64 {
        let total = self.on[0] + self.on[1];
        if total == 0 {
            0.0
        } else {
            100.0 * self.on[0] as f64 / total as f64
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ScaleoutReport {
    pub protocol: String,
    pub clients: usize,
    pub max_connection_age_s: f64,
    pub grace_s: f64,
    /// First connect → every client holds its full config on some replica.
    pub full_config_s: Option<f64>,
    /// The split once every client had its config.
    pub split_connected: Split,
    /// Clients on the killed replica at the kill.
    pub moved_clients: usize,
    /// Kill → every client on the other replica with its full config there (`None`: not within the
    /// timeout).
    pub failover_s: Option<f64>,
    /// Restart (spawn) → the replica serves (its first complete snapshot, port open).
    pub restart_ready_s: Option<f64>,
    /// The split every `sample_every_s` after the restart.
    pub after_restart: Vec<Split>,
    /// The split one max-connection-age after the restart, and one age + 10% jitter + grace after it
    /// (by then every connection that existed at the restart has reached its age).
    pub split_after_age: Option<Split>,
    pub split_after_age_grace: Option<Split>,
    /// Connections the clients opened in all (each records client, replica and time).
    pub connections_opened: u64,
    /// Connection attempts refused (the killed replica, before it was taken out of the ready set).
    pub connects_refused: u64,
    pub violations: u64,
    pub first_violation: Option<String>,
    /// Streams that ended (max age, the kill); every client reconnects.
    pub stream_ends: u64,
    /// The first stream that ended with an error (a max-age end is `UNAVAILABLE`).
    pub first_stream_error: Option<String>,
    /// Peak RSS of each replica (replica 0: its first run, up to the kill), bytes.
    pub peak_rss: [u64; REPLICAS],
    /// Peak RSS of the restarted replica, bytes.
    pub restarted_peak_rss: u64,
    pub loadavg_start: f64,
    pub loadavg_end: f64,
}

impl ScaleoutReport {
    /// The suite's rows for this run.
    pub fn rows(&self) -> Vec<Row> {
        let s = format!(
            "scale-out/{} (2 replicas, {} clients, age {}s)",
            self.protocol, self.clients, self.max_connection_age_s
        );
        let mib = |b: u64| (b > 0).then(|| b as f64 / (1 << 20) as f64);
        vec![
            Row::new(
                &s,
                "clients on the replica killed later, after connect",
                Goal::Report,
                "%",
                (self.full_config_s.is_some()).then(|| self.split_connected.share_restarted()),
            ),
            Row::new(
                &s,
                "kill one replica → all clients on the other with full config",
                Goal::Below(15.0),
                "s",
                self.failover_s,
            ),
            Row::new(
                &s,
                "restarted replica's share after one max-connection-age",
                Goal::Report,
                "%",
                self.split_after_age.map(|s| s.share_restarted()),
            ),
            Row::new(
                &s,
                "restarted replica's share after age + 10% jitter + grace",
                Goal::Within(40.0, 60.0),
                "%",
                self.split_after_age_grace.map(|s| s.share_restarted()),
            ),
            Row::new(
                &s,
                "empty or partial responses",
                Goal::AtMost(0.0),
                "",
                Some(self.violations as f64),
            ),
            Row::new(
                &s,
                "surviving replica peak RSS (all clients)",
                Goal::Report,
                "MiB",
                mib(self.peak_rss[1]),
            ),
        ]
    }
}

/// What the clients and the driver share.
pub(crate) struct Shared {
    urls: Vec<String>,
    /// Replicas a new connection may go to (the Service's ready endpoints).
    ready: Vec<AtomicBool>,
    /// Per client: its current replica, or [`NONE`].
    replica: Vec<AtomicU8>,
    /// Every connection opened: (ns since the tracker's base, client, replica).
    history: Mutex<Vec<(u64, u32, u8)>>,
    refused: AtomicU64,
    stream_ends: AtomicU64,
}

impl Shared {
    fn split(&self, tracker: &Tracker, t_s: f64) -> Split {
        let mut split = Split {
            t_s,
            ..Split::default()
        };
        for (i, r) in self.replica.iter().enumerate() {
            match r.load(Ordering::Acquire) {
                NONE => split.connecting += 1,
                r => {
                    split.on[r as usize] += 1;
                    if tracker.stream_synced_at(i).is_some() {
                        split.synced[r as usize] += 1;
                    }
                }
            }
        }
        split
    }
}

macro_rules! progress {
    ($cfg:expr, $($arg:tt)*) => {
        if $cfg.progress {
            eprintln!("xds-load: scale-out: {}", format!($($arg)*));
        }
    };
}

/// Runs the scale-out scenario once per protocol of `config`.
pub async fn run(
    config: &Config,
    settings: &ScaleoutSettings,
) -> anyhow::Result<Vec<ScaleoutReport>> {
    if settings.max_connection_age_s <= 0.0 {
        bail!("scale-out needs a max connection age > 0 (it is what moves clients back)");
    }
    let mut out = Vec::new();
    for &protocol in &config.protocols {
        out.push(run_one(config, settings, protocol).await?);
    }
    Ok(out)
}

fn server_flags(settings: &ScaleoutSettings) -> Vec<String> {
    vec![
        "--max-connection-age".into(),
        format!("{}ms", (settings.max_connection_age_s * 1e3).round() as u64),
        "--max-connection-age-grace".into(),
        format!("{}ms", (settings.grace_s * 1e3).round() as u64),
    ]
}

async fn run_one(
    config: &Config,
    settings: &ScaleoutSettings,
    protocol: Protocol,
) -> anyhow::Result<ScaleoutReport> {
    let name = protocol.name();
    let clients = settings.clients;
    let loadavg_start = procfs::loadavg();
    let dir = crate::tmp::TempDir::new("scaleout");
    let (scenario, endpoints) = crate::run::scenario_file(config, dir.path())?;
    let flags = server_flags(settings);
    let start = |replica: usize, port: Option<u16>, run: usize| {
        let log = dir.join(&format!("xds-server-{replica}-{run}.log"));
        match port {
            Some(port) => {
                ServerProcess::start_on(port, &config.server_bin, &endpoints, &log, &flags)
            }
            None => ServerProcess::start(&config.server_bin, &endpoints, &log, &flags),
        }
    };
    let mut servers = [start(0, None, 1)?, start(1, None, 1)?];
    for s in &mut servers {
        s.wait_ready(Duration::from_secs(120)).await?;
    }
    let timeout = Duration::from_secs(settings.timeout_s);

    // Phase 1: connect.
    progress!(
        config,
        "{name}: {clients} clients over 2 replicas (max connection age {} s, grace {} s)",
        settings.max_connection_age_s,
        settings.grace_s
    );
    let tracker = Tracker::new(clients, &scenario.cluster_names());
    let (shared, tasks) = spawn_clients(
        &tracker,
        &scenario,
        vec![servers[0].url(), servers[1].url()],
        protocol,
        config.connect_concurrency,
    );
    let abort_all = || tasks.iter().for_each(|t| t.abort());
    let all_synced = || {
        (0..clients).all(|i| {
            shared.replica[i].load(Ordering::Acquire) != NONE
                && tracker.stream_synced_at(i).is_some()
        })
    };
    let t0 = Instant::now();
    let connected = wait(&mut servers, &[0, 1], timeout, all_synced).await;
    let connected = match connected {
        Ok(ok) => ok,
        Err(e) => {
            abort_all();
            return Err(e);
        }
    };
    let full_config_s = connected.then(|| t0.elapsed().as_secs_f64());
    let split_connected = shared.split(&tracker, 0.0);
    progress!(
        config,
        "{name}: full config at every client {}; split {:?}",
        full_config_s.map_or("NOT reached".into(), |s| format!("in {s:.2} s")),
        split_connected.on
    );

    // Phase 2: kill replica 0.
    let moved_clients = shared.split(&tracker, 0.0).on[0];
    let peak_0 = servers[0].sample().map_or(0, |s| s.hwm);
    shared.ready[0].store(false, Ordering::Release);
    let killed_at = Instant::now();
    servers[0].kill();
    let all_on_survivor = || {
        (0..clients).all(|i| {
            shared.replica[i].load(Ordering::Acquire) == 1 && tracker.stream_synced_at(i).is_some()
        })
    };
    let failover_s = match wait(&mut servers, &[1], timeout, all_on_survivor).await {
        Ok(ok) => ok.then(|| killed_at.elapsed().as_secs_f64()),
        Err(e) => {
            abort_all();
            return Err(e);
        }
    };
    progress!(
        config,
        "{name}: replica 0 killed with {moved_clients} clients; all on replica 1 with full config {}",
        failover_s.map_or("NOT reached".into(), |s| format!("after {s:.2} s"))
    );

    // Phase 3: restart replica 0 on its port; it joins the Service once it serves.
    let port = servers[0].port;
    let restarted = Instant::now();
    servers[0] = start(0, Some(port), 2)?;
    let ready = servers[0].wait_ready(Duration::from_secs(120)).await;
    if let Err(e) = ready {
        abort_all();
        return Err(e.context("restarting replica 0"));
    }
    let restart_ready_s = Some(restarted.elapsed().as_secs_f64());
    shared.ready[0].store(true, Ordering::Release);
    let age = Duration::from_secs_f64(settings.max_connection_age_s);
    let age_grace = Duration::from_secs_f64(
        settings.max_connection_age_s * (1.0 + AGE_JITTER) + settings.grace_s,
    );
    let window = age_grace + Duration::from_secs(2);
    let report_every = Duration::from_secs_f64(settings.sample_every_s.max(0.25));
    let mut after_restart = Vec::new();
    let (mut split_after_age, mut split_after_age_grace) = (None, None);
    let mut next_report = restarted;
    loop {
        let now = Instant::now();
        let t = now - restarted;
        let split = shared.split(&tracker, t.as_secs_f64());
        if now >= next_report {
            next_report += report_every;
            progress!(
                config,
                "{name}: {:.0} s after restart: {:?} clients (restarted, other), {} connecting, {:.0}% on the restarted one",
                t.as_secs_f64(),
                split.on,
                split.connecting,
                split.share_restarted()
            );
            after_restart.push(split);
        }
        if split_after_age.is_none() && t >= age {
            split_after_age = Some(split);
        }
        if split_after_age_grace.is_none() && t >= age_grace {
            split_after_age_grace = Some(split);
        }
        if t >= window {
            break;
        }
        for (i, s) in servers.iter_mut().enumerate() {
            if !s.is_running() {
                abort_all();
                bail!(
                    "replica {i} exited during the run; its log:\n{}",
                    crate::tail(&s.log(), 40)
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    tracker.stop();
    let peak_rss = [peak_0, servers[1].sample().map_or(0, |s| s.hwm)];
    let restarted_peak_rss = servers[0].sample().map_or(0, |s| s.hwm);
    abort_all();
    for s in &mut servers {
        s.kill();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let connections_opened = shared
        .history
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .len() as u64;
    Ok(ScaleoutReport {
        protocol: name.into(),
        clients,
        max_connection_age_s: settings.max_connection_age_s,
        grace_s: settings.grace_s,
        full_config_s,
        split_connected,
        moved_clients,
        failover_s,
        restart_ready_s,
        after_restart,
        split_after_age,
        split_after_age_grace,
        connections_opened,
        connects_refused: shared.refused.load(Ordering::Relaxed),
        violations: tracker.violations.load(Ordering::Acquire),
        first_violation: tracker.first_violation(),
        stream_ends: shared.stream_ends.load(Ordering::Relaxed),
        first_stream_error: tracker.first_failure(),
        peak_rss,
        restarted_peak_rss,
        loadavg_start,
        loadavg_end: procfs::loadavg(),
    })
}

/// The server's connection-age jitter (`xds-server/src/grpc/transport.rs`, `AGE_JITTER`): a
/// connection lives its age ± this fraction.
pub const AGE_JITTER: f64 = 0.1;

/// Waits until `done` or `timeout`; fails if one of the `alive` replicas exited.
async fn wait(
    servers: &mut [ServerProcess; REPLICAS],
    alive: &[usize],
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return Ok(true);
        }
        for &i in alive {
            if !servers[i].is_running() {
                bail!(
                    "replica {i} exited during the run; its log:\n{}",
                    crate::tail(&servers[i].log(), 40)
                );
            }
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// xorshift64 seeded per client: the replica picks and the backoff jitter.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Starts `tracker.clients` clients that reach the servers at `urls` as through a Service (each new
/// connection to a random ready one); returns what they share and their tasks.
pub(crate) fn spawn_clients(
    tracker: &Arc<Tracker>,
    scenario: &Scenario,
    urls: Vec<String>,
    protocol: Protocol,
    connect_concurrency: usize,
) -> (Arc<Shared>, Vec<tokio::task::JoinHandle<()>>) {
    let clients = tracker.clients;
    let shared = Arc::new(Shared {
        ready: urls.iter().map(|_| AtomicBool::new(true)).collect(),
        urls,
        replica: (0..clients).map(|_| AtomicU8::new(NONE)).collect(),
        history: Mutex::new(Vec::new()),
        refused: AtomicU64::new(0),
        stream_ends: AtomicU64::new(0),
    });
    let gate = Arc::new(tokio::sync::Semaphore::new(connect_concurrency.max(1)));
    let tasks = (0..clients)
        .map(|index| {
            let (r, z) = scenario.locality(index);
            let id = Identity {
                index,
                region: scenario::region_name(r),
                zone: scenario::zone_name(r, z),
            };
            tokio::spawn(run_client(
                tracker.clone(),
                shared.clone(),
                gate.clone(),
                protocol,
                id,
            ))
        })
        .collect();
    (shared, tasks)
}

/// One client: connect to a random ready replica, run one ADS stream on that connection, and when it
/// ends (max age, the replica killed) start over with a new connection and a new pick.
async fn run_client(
    tracker: Arc<Tracker>,
    shared: Arc<Shared>,
    gate: Arc<tokio::sync::Semaphore>,
    protocol: Protocol,
    id: Identity,
) {
    let mut rng =
        Rng(0x9e37_79b9_7f4a_7c15 ^ (id.index as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut st = ClientState::new(tracker.clusters());
    let base = Duration::from_millis(250);
    let mut bound = base;
    // Only the first connects are paced (thousands at once overflow the listen backlog); later ones
    // come as the server sends clients away.
    let mut permit = gate.acquire_owned().await.ok();
    loop {
        let ready: Vec<usize> = (0..shared.urls.len())
            .filter(|&r| shared.ready[r].load(Ordering::Acquire))
            .collect();
        let replica = if ready.is_empty() {
            (rng.next() % shared.urls.len() as u64) as usize
        } else {
            ready[(rng.next() % ready.len() as u64) as usize]
        };
        let channel = match connect(&shared.urls[replica]).await {
            Ok(c) => c,
            Err(_) => {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                backoff(&mut rng, &mut bound).await;
                continue;
            }
        };
        shared.replica[id.index].store(replica as u8, Ordering::Release);
        shared
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((tracker.now_ns(), id.index as u32, replica as u8));
        let (opened_tx, opened_rx) = tokio::sync::oneshot::channel();
        let mut opened = Some(opened_tx);
        let stream = client::run_stream(&tracker, channel, protocol, &id, &mut st, &mut opened);
        let result = if permit.is_some() {
            // Hold the connect slot until the stream is open.
            tokio::pin!(stream);
            tokio::select! {
                r = &mut stream => r,
                _ = opened_rx => {
                    drop(permit.take());
                    stream.await
                }
            }
        } else {
            stream.await
        };
        drop(permit.take());
        shared.replica[id.index].store(NONE, Ordering::Release);
        if tracker.stopping() {
            return;
        }
        shared.stream_ends.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = result {
            tracker.fail(id.index, format!("{e:#}"));
        }
        if st.synced() {
            bound = base;
        }
        backoff(&mut rng, &mut bound).await;
    }
}

async fn connect(url: &str) -> anyhow::Result<tonic::transport::Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .context("replica URL")?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5));
    Ok(endpoint.connect().await?)
}

/// Waits a random time up to `bound`, then doubles `bound` (at most 5 s).
async fn backoff(rng: &mut Rng, bound: &mut Duration) {
    let wait = bound.as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(rng.next() % wait.max(1) + 1)).await;
    *bound = (*bound * 2).min(Duration::from_secs(5));
}
