//! What a benchmark run measured, as data (`--json`) and as text.

use std::fmt::Write as _;

use serde::Serialize;

use super::procfs::Machine;
use super::spawn::CacheLine;
use super::{Config, Mode, Protocol};

const MIB: f64 = 1024.0 * 1024.0;

/// p50 / p99 / max of a sample, in milliseconds (nearest rank).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Dist {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Dist {
    /// `None` for an empty sample.
    pub fn of_ns(values: impl IntoIterator<Item = u64>) -> Option<Dist> {
        let mut v: Vec<u64> = values.into_iter().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        let ms = |ns: u64| ns as f64 / 1e6;
        Some(Dist {
            count: v.len(),
            p50_ms: ms(rank(0.50)),
            p99_ms: ms(rank(0.99)),
            max_ms: ms(*v.last().expect("not empty")),
        })
    }
}

/// Time for all clients to get their first full config.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Initial {
    /// Clients that got their full config.
    pub complete: usize,
    /// From the first connect to the last client's full config (`None`: not every client got it).
    pub all_s: Option<f64>,
    /// Per-client time from the first connect to its full config.
    pub per_client: Option<Dist>,
    pub bytes: u64,
    pub responses: u64,
    pub server_cpu_s: f64,
}

/// Single endpoint changes, one at a time.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Single {
    pub changes: usize,
    pub converged: usize,
    /// Change written (rename) → every client has it.
    pub convergence: Option<Dist>,
    /// Convergence of the first change, the first snapshot after the clients connected, ms.
    pub first_ms: Option<f64>,
    /// Without the first change: the steady state.
    pub after_first: Option<Dist>,
    /// Every change's convergence in order, ms (`None`: not converged).
    pub each_ms: Vec<Option<f64>>,
    /// Rename → the server logged the new snapshot (file watch debounce + stability re-read + parse +
    /// build): the part no push can beat.
    pub publish_floor: Option<Dist>,
    /// Part of the floor: rename → the server logged the file reloaded (watch debounce, stability
    /// re-read, YAML parse).
    pub file_reload: Option<Dist>,
    /// Snapshot published → every client has it (convergence minus the floor, per change).
    pub push: Option<Dist>,
    /// Clients still missing each unconverged change.
    pub missing_clients: Vec<usize>,
    pub bytes: u64,
    pub server_cpu_s: f64,
    /// The load generator's own CPU over the same changes (it shares the machine's cores).
    pub loadgen_cpu_s: f64,
}

/// Sustained churn.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Churn {
    pub rate_per_s: f64,
    pub seconds: f64,
    pub write_interval_ms: f64,
    /// Changes due at the rate (rate × seconds).
    pub offered: usize,
    /// Changes made: offered − skipped.
    pub changes: usize,
    pub converged: usize,
    /// Changes not made because no cluster had a free endpoint slot (every slot's change in flight).
    pub skipped: usize,
    pub convergence: Option<Dist>,
    /// Snapshots the server published during the churn.
    pub publishes: usize,
    /// Server RSS at the start, middle and end of the churn, and its maximum, bytes.
    pub rss_start: u64,
    pub rss_mid: u64,
    pub rss_end: u64,
    pub rss_max: u64,
    pub server_cpu_s: f64,
    /// Server CPU seconds per second of churn.
    pub server_cores: f64,
    /// The load generator's CPU seconds per second of churn.
    pub loadgen_cores: f64,
    pub bytes: u64,
    pub missing_clients: Vec<usize>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerFigures {
    /// RSS with the snapshot built and no client, bytes.
    pub idle_rss: u64,
    /// RSS once every client has its full config (after a 1 s settle), bytes.
    pub connected_rss: u64,
    /// (connected − idle) / clients, bytes.
    pub per_client_bytes: f64,
    /// Peak RSS over the whole run (VmHWM), bytes.
    pub peak_rss: u64,
    /// Peak RSS up to the end of the single changes (before any churn), bytes: what the baseline,
    /// which runs no churn by default, is compared on.
    pub peak_rss_before_churn: u64,
    pub cpu_s: f64,
    pub warnings: usize,
    pub cache: Option<CacheLine>,
}

/// One scenario against one server (protocol × sharing).
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub protocol: Protocol,
    pub mode: Mode,
    pub clients: usize,
    pub connections: usize,
    pub initial: Initial,
    pub single: Option<Single>,
    pub churn: Option<Churn>,
    pub server: ServerFigures,
    /// Response bytes received by all clients over the run (gRPC message payloads).
    pub bytes_total: u64,
    pub responses_total: u64,
    /// The load generator's own CPU seconds and peak RSS (it shares the machine with the server).
    pub loadgen_cpu_s: f64,
    pub loadgen_peak_rss: u64,
    /// ADS streams that failed or were ended by the server; each client reconnects (as Envoy does)
    /// and is served again, so changes still converge.
    pub stream_failures: u64,
    pub first_failure: Option<String>,
    pub seconds: f64,
    /// The machine's 1-minute load average when the run started and ended (2 = both cores busy).
    pub loadavg_start: f64,
    pub loadavg_end: f64,
}

impl RunReport {
    pub fn name(&self) -> String {
        format!("{}/{}", self.protocol.name(), self.mode.name())
    }

    /// Every client got full config, every change converged at every client, no client failed.
    pub fn all_delivered(&self) -> bool {
        self.stream_failures == 0
            && self.initial.complete == self.clients
            && self
                .single
                .as_ref()
                .is_none_or(|s| s.converged == s.changes)
            && self.churn.as_ref().is_none_or(|c| c.converged == c.changes)
    }
}

/// baseline ÷ shared for one protocol.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub protocol: Protocol,
    pub full_config_time: Option<f64>,
    pub initial_server_cpu: Option<f64>,
    pub single_server_cpu: Option<f64>,
    /// Peak RSS through full config and single changes.
    pub peak_rss: Option<f64>,
    pub connected_rss: Option<f64>,
    pub single_p99: Option<f64>,
    pub churn_p99: Option<f64>,
}

/// One of the targets against one run.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub run: String,
    pub what: String,
    pub limit: String,
    pub measured: String,
    pub met: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub config: Config,
    pub runs: Vec<RunReport>,
    pub ratios: Vec<Ratio>,
    pub targets: Vec<Target>,
    /// Whether the scenario is the (5,000 clients, 500 × 12, 3 × 3, 50/s for 60 s); the
    /// targets are stated for that one.
    pub target_scenario: bool,
}

fn div(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

pub fn ratios(runs: &[RunReport]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for shared in runs.iter().filter(|r| r.mode == Mode::Shared) {
        let Some(base) = runs
            .iter()
            .find(|r| r.mode == Mode::Baseline && r.protocol == shared.protocol)
        else {
            continue;
        };
        let p99 = |r: &RunReport| {
            r.single
                .as_ref()
                .and_then(|s| s.convergence)
                .map(|d| d.p99_ms)
        };
        let churn = |r: &RunReport| {
            r.churn
                .as_ref()
                .and_then(|c| c.convergence)
                .map(|d| d.p99_ms)
        };
        out.push(Ratio {
            protocol: shared.protocol,
            full_config_time: div(base.initial.all_s, shared.initial.all_s),
            initial_server_cpu: div(
                Some(base.initial.server_cpu_s),
                Some(shared.initial.server_cpu_s),
            ),
            single_server_cpu: div(
                base.single.as_ref().map(|s| s.server_cpu_s),
                shared.single.as_ref().map(|s| s.server_cpu_s),
            ),
            peak_rss: div(
                Some(base.server.peak_rss_before_churn as f64),
                Some(shared.server.peak_rss_before_churn as f64),
            ),
            connected_rss: div(
                Some(base.server.connected_rss as f64),
                Some(shared.server.connected_rss as f64),
            ),
            single_p99: div(p99(base), p99(shared)),
            churn_p99: div(churn(base), churn(shared)),
        });
    }
    out
}

pub fn targets(runs: &[RunReport]) -> Vec<Target> {
    let mut out = Vec::new();
    for r in runs.iter().filter(|r| r.mode == Mode::Shared) {
        let mut push = |what: &str, limit: &str, measured: String, met: bool| {
            out.push(Target {
                run: r.name(),
                what: what.into(),
                limit: limit.into(),
                measured,
                met,
            })
        };
        match r.initial.all_s {
            Some(s) => push(
                "full config at every client",
                "< 20 s",
                format!("{s:.2} s"),
                s < 20.0,
            ),
            None => push(
                "full config at every client",
                "< 20 s",
                format!("only {}/{} clients", r.initial.complete, r.clients),
                false,
            ),
        }
        if let Some(s) = &r.single {
            match s.convergence {
                Some(d) => push(
                    "one endpoint change, p99 convergence",
                    "< 250 ms",
                    format!(
                        "{:.0} ms ({}/{} converged)",
                        d.p99_ms, s.converged, s.changes
                    ),
                    d.p99_ms < 250.0 && s.converged == s.changes,
                ),
                None => push(
                    "one endpoint change, p99 convergence",
                    "< 250 ms",
                    "none converged".into(),
                    false,
                ),
            }
        }
        if let Some(c) = &r.churn {
            match c.convergence {
                Some(d) => push(
                    "churn, p99 convergence",
                    "< 1 s",
                    format!(
                        "{:.0} ms ({}/{} converged)",
                        d.p99_ms, c.converged, c.changes
                    ),
                    d.p99_ms < 1000.0 && c.converged == c.changes,
                ),
                None => push(
                    "churn, p99 convergence",
                    "< 1 s",
                    "none converged".into(),
                    false,
                ),
            }
            // Growth from the middle to the end of the churn: a steady state stays within 10%.
            let bounded = c.rss_mid > 0 && (c.rss_end as f64) <= c.rss_mid as f64 * 1.10;
            push(
                "churn, no unbounded growth (RSS end ≤ 1.1 × middle)",
                "bounded",
                format!(
                    "{:.0} → {:.0} → {:.0} MiB",
                    c.rss_start as f64 / MIB,
                    c.rss_mid as f64 / MIB,
                    c.rss_end as f64 / MIB
                ),
                bounded,
            );
        }
        push(
            "server peak RSS",
            "< 1 GiB",
            format!("{:.0} MiB", r.server.peak_rss as f64 / MIB),
            r.server.peak_rss < 1 << 30,
        );
    }
    out
}

fn dist(d: &Option<Dist>) -> String {
    match d {
        Some(d) => format!(
            "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (n={})",
            d.p50_ms, d.p99_ms, d.max_ms, d.count
        ),
        None => "-".into(),
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / MIB)
}

fn ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}×"))
}

impl Report {
    pub fn human(&self) -> String {
        let mut o = String::new();
        let c = &self.config;
        let m = &self.machine;
        let _ = writeln!(o, "xds-load report");
        let _ = writeln!(
            o,
            "machine: {} CPUs ({}), {:.1} GiB RAM, Linux {}",
            m.cpus, m.cpu_model, m.memory_gib, m.kernel
        );
        let _ = writeln!(
            o,
            "scenario: {} clients ({} per connection), {} services × {} endpoints over {} regions × {} zones; \
             {} single changes ({} ms apart); churn {}/s for {} s, file written every {} ms",
            c.clients,
            c.clients_per_connection,
            c.services,
            c.endpoints_per_service,
            c.regions,
            c.zones,
            c.changes,
            c.change_interval_ms,
            c.churn_rate,
            c.churn_seconds,
            c.churn_write_interval_ms
        );
        let _ = writeln!(o, "server: {}", c.server_bin.display());
        for r in &self.runs {
            let _ = writeln!(
                o,
                "\n== {} ({} clients over {} connections) ==",
                r.name(),
                r.clients,
                r.connections
            );
            let i = &r.initial;
            let _ = writeln!(
                o,
                "  full config:   {}/{} clients, all in {}; per client {}",
                i.complete,
                r.clients,
                i.all_s.map_or("-".into(), |s| format!("{s:.2} s")),
                dist(&i.per_client)
            );
            let _ = writeln!(
                o,
                "                 {} in {} responses, server CPU {:.2} s",
                mib(i.bytes),
                i.responses,
                i.server_cpu_s
            );
            if let Some(s) = &r.single {
                let _ = writeln!(
                    o,
                    "  single change: {}/{} converged: {}",
                    s.converged,
                    s.changes,
                    dist(&s.convergence)
                );
                let _ = writeln!(
                    o,
                    "    first change after connect: {}; the others: {}",
                    s.first_ms.map_or("-".into(), |ms| format!("{ms:.0} ms")),
                    dist(&s.after_first)
                );
                let _ = writeln!(
                    o,
                    "    publish floor (rename → snapshot published): {}",
                    dist(&s.publish_floor)
                );
                let _ = writeln!(
                    o,
                    "    push (published → last client):              {}",
                    dist(&s.push)
                );
                let _ = writeln!(
                    o,
                    "    {} sent, server CPU {:.2} s, load generator CPU {:.2} s",
                    mib(s.bytes),
                    s.server_cpu_s,
                    s.loadgen_cpu_s
                );
                if !s.missing_clients.is_empty() {
                    let _ = writeln!(
                        o,
                        "    unconverged changes, clients missing: {:?}",
                        s.missing_clients
                    );
                }
            }
            if let Some(ch) = &r.churn {
                let _ = writeln!(
                    o,
                    "  churn {}/s × {:.0} s: {} offered, {} made ({} skipped), {} converged: {}",
                    ch.rate_per_s,
                    ch.seconds,
                    ch.offered,
                    ch.changes,
                    ch.skipped,
                    ch.converged,
                    dist(&ch.convergence)
                );
                let _ = writeln!(
                    o,
                    "    file written every {:.0} ms, {} snapshots published, server CPU {:.1} s ({:.2} cores, load generator {:.2}), {} sent",
                    ch.write_interval_ms,
                    ch.publishes,
                    ch.server_cpu_s,
                    ch.server_cores,
                    ch.loadgen_cores,
                    mib(ch.bytes)
                );
                let _ = writeln!(
                    o,
                    "    server RSS start {} → middle {} → end {} (max {})",
                    mib(ch.rss_start),
                    mib(ch.rss_mid),
                    mib(ch.rss_end),
                    mib(ch.rss_max)
                );
                if !ch.missing_clients.is_empty() {
                    let _ = writeln!(
                        o,
                        "    unconverged changes, clients missing: {:?}",
                        ch.missing_clients
                    );
                }
            }
            let s = &r.server;
            let _ = writeln!(
                o,
                "  server: CPU {:.1} s, peak RSS {}, idle {} → connected {} = {:.1} KiB per client",
                s.cpu_s,
                mib(s.peak_rss),
                mib(s.idle_rss),
                mib(s.connected_rss),
                s.per_client_bytes / 1024.0
            );
            if let Some(cache) = s.cache {
                let _ = writeln!(
                    o,
                    "          cache: {} locality classes, {} EDS answers, {}",
                    cache.classes,
                    cache.eds_answers,
                    mib(cache.cached_bytes)
                );
            }
            let _ = writeln!(
                o,
                "  bytes sent: {} in {} responses; load generator CPU {:.1} s, peak RSS {}; run {:.0} s, \
                 load average {:.1} → {:.1}",
                mib(r.bytes_total),
                r.responses_total,
                r.loadgen_cpu_s,
                mib(r.loadgen_peak_rss),
                r.seconds,
                r.loadavg_start,
                r.loadavg_end
            );
            if r.stream_failures > 0 || s.warnings > 0 {
                let _ = writeln!(
                    o,
                    "  PROBLEMS: {} stream failures, clients reconnected (first: {}), {} server warnings",
                    r.stream_failures,
                    r.first_failure.as_deref().unwrap_or("-"),
                    s.warnings
                );
            }
        }
        if !self.ratios.is_empty() {
            let _ = writeln!(o, "\nbaseline (--no-shared-cache) ÷ shared:");
            for r in &self.ratios {
                let _ = writeln!(
                    o,
                    "  {}: full-config time {}, its server CPU {}, single-changes server CPU {}, peak RSS {}, connected RSS {}, single-change p99 {}, churn p99 {}",
                    r.protocol.name(),
                    ratio(r.full_config_time),
                    ratio(r.initial_server_cpu),
                    ratio(r.single_server_cpu),
                    ratio(r.peak_rss),
                    ratio(r.connected_rss),
                    ratio(r.single_p99),
                    ratio(r.churn_p99)
                );
            }
        }
        let _ = writeln!(
            o,
            "\ntargets{}:",
            if self.target_scenario {
                ""
            } else {
                " (stated for the issue's scenario; this one differs)"
            }
        );
        for t in &self.targets {
            let _ = writeln!(
                o,
                "  [{}] {} {}: {} (target {})",
                if t.met { "met " } else { "MISS" },
                t.run,
                t.what,
                t.measured,
                t.limit
            );
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let d = Dist::of_ns((1..=100).map(|ms| ms * 1_000_000)).unwrap();
        assert_eq!(
            (d.p50_ms, d.p99_ms, d.max_ms, d.count),
            (50.0, 99.0, 100.0, 100)
        );
        let one = Dist::of_ns([5_000_000]).unwrap();
        assert_eq!((one.p50_ms, one.p99_ms), (5.0, 5.0));
        assert!(Dist::of_ns([]).is_none());
    }
}
