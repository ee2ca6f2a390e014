//! The whole benchmark as one command (`xds-load --suite`, what `scripts/bench.sh` runs): the load
//! scenarios ([`crate::run`]: full config, single changes, churn, both protocols, and the
//! `--no-shared-cache` baseline with its ratios), the reconnect storm ([`crate::storm`]) and the
//! scale-out across two replicas ([`crate::scaleout`]), reported as ONE table of rows — metric, target,
//! measured, met or missed (and by how much) — and as JSON.
//!
//! A scenario adds itself with a report type that has `fn rows(&self) -> Vec<Row>` (each row built by
//! [`Row::new`] from a [`Goal`] and the measured value), a field in [`SuiteReport`] and a line in
//! [`run`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;

use crate::kube::{KubeOptions, KubeReport};
use crate::procfs::{self, Machine};
use crate::report::{Report, RunReport, Single};
use crate::scaleout::{ScaleoutReport, ScaleoutSettings};
use crate::storm::{StormReport, StormSettings};
use crate::{Config, Mode};

const MIB: f64 = 1024.0 * 1024.0;

/// What a row's measured value must be.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Goal {
    /// Strictly below.
    Below(f64),
    /// At most (a count that must stay 0 is `AtMost(0.0)`).
    AtMost(f64),
    /// Inclusive range.
    Within(f64, f64),
    /// No target: reported for reference.
    Report,
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub scenario: String,
    pub metric: String,
    pub goal: Goal,
    /// The target as text ("< 15 s"), empty for [`Goal::Report`].
    pub target: String,
    pub unit: String,
    /// `None`: not measured (the phase did not finish, e.g. not every client got there in time).
    pub measured: Option<f64>,
    /// `None` for [`Goal::Report`].
    pub met: Option<bool>,
    /// How far off a missed target is.
    pub missed_by: Option<String>,
}

impl Row {
    pub fn new(scenario: &str, metric: &str, goal: Goal, unit: &str, measured: Option<f64>) -> Row {
        let u = |x: f64| format_value(x, unit);
        let target = match goal {
            Goal::Below(x) => format!("< {}", u(x)),
            Goal::AtMost(x) => format!("≤ {}", u(x)),
            Goal::Within(a, b) => format!("{}–{}", format_value(a, ""), u(b)),
            Goal::Report => String::new(),
        };
        let (met, missed_by) = match (goal, measured) {
            (Goal::Report, _) => (None, None),
            (_, None) => (Some(false), Some("not reached".to_string())),
            (Goal::Below(x), Some(m)) if m >= x => (Some(false), Some(over(m, x, unit))),
            (Goal::AtMost(x), Some(m)) if m > x => (Some(false), Some(over(m, x, unit))),
            (Goal::Within(a, _), Some(m)) if m < a => {
                (Some(false), Some(format!("{} below", u(a - m))))
            }
            (Goal::Within(_, b), Some(m)) if m > b => {
                (Some(false), Some(format!("{} above", u(m - b))))
            }
            _ => (Some(true), None),
        };
        Row {
            scenario: scenario.into(),
            metric: metric.into(),
            goal,
            target,
            unit: unit.into(),
            measured,
            met,
            missed_by,
        }
    }

    /// Marks a row missed whatever its value, for a reason beside it (e.g. not every change
    /// converged, so the percentile leaves some out).
    pub fn unless(mut self, ok: bool, why: &str) -> Row {
        if !ok && self.met.is_some() {
            self.met = Some(false);
            self.missed_by = Some(match self.missed_by {
                Some(by) => format!("{by}; {why}"),
                None => why.into(),
            });
        }
        self
    }

    pub fn measured_text(&self) -> String {
        self.measured
            .map_or("-".into(), |m| format_value(m, &self.unit))
    }

    pub fn result_text(&self) -> String {
        match (self.met, &self.missed_by) {
            (None, _) => String::new(),
            (Some(true), _) => "met".into(),
            (Some(false), Some(by)) => format!("MISSED ({by})"),
            (Some(false), None) => "MISSED".into(),
        }
    }
}

fn format_value(x: f64, unit: &str) -> String {
    let number = match unit {
        "s" => format!("{x:.2}"),
        "%" | "×" => format!("{x:.1}"),
        _ if x.abs() >= 100.0 || x.fract() == 0.0 => format!("{x:.0}"),
        _ => format!("{x:.1}"),
    };
    match unit {
        "" => number,
        "%" | "×" => format!("{number}{unit}"),
        _ => format!("{number} {unit}"),
    }
}

fn over(measured: f64, target: f64, unit: &str) -> String {
    let diff = format_value(measured - target, unit);
    if target > 0.0 {
        format!("+{diff}, {:.1}× the target", measured / target)
    } else {
        format!("+{diff}")
    }
}

/// What the suite runs.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteConfig {
    /// The load scenarios (and the scenario the others use: services, localities, server binary).
    pub load: Config,
    /// Run the load scenarios (`false`: only their scenario is used, by the storm and the scale-out).
    pub run_load: bool,
    pub storm: Option<StormSettings>,
    pub scaleout: Option<ScaleoutSettings>,
    /// The Kubernetes source's scenarios (single changes, churn, a rollout burst through EndpointSlice
    /// writes), with `load`'s clients and phases.
    pub kubernetes: Option<KubeOptions>,
    /// The 500-client version.
    pub quick: bool,
}

impl SuiteConfig {
    /// The scale: `load` as given; the storm and the scale-out with as many clients, the
    /// replicas with a 60 s maximum connection age and 10 s grace.
    pub fn full(load: Config) -> Self {
        let clients = load.clients;
        SuiteConfig {
            storm: Some(StormSettings {
                clients,
                timeout_s: 120,
            }),
            scaleout: Some(ScaleoutSettings {
                clients,
                max_connection_age_s: 60.0,
                grace_s: 10.0,
                sample_every_s: 5.0,
                timeout_s: 120,
            }),
            kubernetes: Some(KubeOptions::default()),
            load,
            run_load: true,
            quick: false,
        }
    }

    /// Everything at 500 clients and short phases (under two minutes on 2 idle cores): 3 single
    /// changes, 5 s of churn, an 8 s maximum connection age.
    pub fn quick(mut load: Config) -> Self {
        load.clients = 500;
        load.changes = 3;
        load.change_interval_ms = 500;
        load.churn_seconds = 5.0;
        load.initial_timeout_s = load.initial_timeout_s.min(60);
        load.change_timeout_s = load.change_timeout_s.min(10);
        let mut suite = SuiteConfig::full(load);
        suite.quick = true;
        if let Some(s) = &mut suite.storm {
            s.timeout_s = 60;
        }
        if let Some(s) = &mut suite.scaleout {
            s.max_connection_age_s = 8.0;
            s.grace_s = 1.0;
            s.sample_every_s = 2.0;
            s.timeout_s = 60;
        }
        suite
    }
}

/// Everything the suite measured.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteReport {
    /// `git rev-parse --short HEAD` of the workspace (`-dirty` with uncommitted changes), if known.
    pub commit: Option<String>,
    pub started_unix_s: u64,
    pub seconds: f64,
    pub machine: Machine,
    /// The machine's 1-minute load average at the start and the end (others share the cores).
    pub loadavg_start: f64,
    pub loadavg_end: f64,
    pub config: SuiteConfig,
    /// The table.
    pub rows: Vec<Row>,
    pub load: Option<Report>,
    pub storm: Vec<StormReport>,
    pub scaleout: Vec<ScaleoutReport>,
    pub kubernetes: Option<KubeReport>,
}

/// Runs every scenario of `config` in turn.
pub async fn run(config: &SuiteConfig) -> anyhow::Result<SuiteReport> {
    let started = Instant::now();
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let loadavg_start = procfs::loadavg();
    // A socket per client here, and as many in the servers (which inherit this limit).
    let clients = [
        config.load.clients,
        config.storm.as_ref().map_or(0, |s| s.clients),
        config.scaleout.as_ref().map_or(0, |s| s.clients),
    ];
    let wanted = clients.into_iter().max().unwrap_or(0) as u64 + 256;
    let limit = procfs::raise_fd_limit(wanted);
    if limit < wanted {
        anyhow::bail!(
            "{} clients need about {wanted} open files, the limit is {limit} (ulimit -n)",
            wanted - 256
        );
    }
    let load = if config.run_load {
        Some(crate::run(&config.load).await.context("load scenarios")?)
    } else {
        None
    };
    let storm = match &config.storm {
        Some(s) => crate::storm::run(&config.load, s)
            .await
            .context("reconnect storm")?,
        None => Vec::new(),
    };
    let scaleout = match &config.scaleout {
        Some(s) => crate::scaleout::run(&config.load, s)
            .await
            .context("scale-out")?,
        None => Vec::new(),
    };
    let kubernetes = match &config.kubernetes {
        Some(k) => Some(
            crate::kube::run_with(&config.load, k)
                .await
                .context("Kubernetes source")?,
        ),
        None => None,
    };
    let mut rows = load.as_ref().map(load_rows).unwrap_or_default();
    rows.extend(kubernetes.iter().flat_map(kube_rows));
    rows.extend(storm.iter().flat_map(StormReport::rows));
    rows.extend(scaleout.iter().flat_map(ScaleoutReport::rows));
    Ok(SuiteReport {
        commit: commit(&crate::paths::workspace_root()),
        started_unix_s,
        seconds: started.elapsed().as_secs_f64(),
        machine: Machine::detect(),
        loadavg_start,
        loadavg_end: procfs::loadavg(),
        config: config.clone(),
        rows,
        load,
        storm,
        scaleout,
        kubernetes,
    })
}

/// The Kubernetes source's rows: the targets for pushes through EndpointSlice writes.
pub fn kube_rows(report: &KubeReport) -> Vec<Row> {
    let mut rows = Vec::new();
    for r in &report.report.runs {
        let s = format!("kubernetes, {} ({} clients)", r.protocol.name(), r.clients);
        rows.extend(change_rows(
            &s,
            r,
            "one EndpointSlice change at every client, p99",
            150.0,
            500.0,
            report.report.machine.cpus,
        ));
    }
    for b in &report.bursts {
        rows.push(Row::new(
            &format!("kubernetes, {}", b.run),
            &format!("burst of {} changes at every client", b.changes),
            Goal::Below(2000.0),
            "ms",
            b.all_ms,
        ));
    }
    rows
}

/// The load scenarios' rows: the targets for each shared run, the baseline's ratios.
pub fn load_rows(report: &Report) -> Vec<Row> {
    let mut rows = Vec::new();
    for r in &report.runs {
        let s = format!("{} ({} clients)", r.name(), r.clients);
        if r.mode == Mode::Baseline {
            rows.push(Row::new(
                &s,
                "full config at every client",
                Goal::Report,
                "s",
                r.initial.all_s,
            ));
            continue;
        }
        rows.extend(shared_rows(&s, r, report.machine.cpus));
    }
    for ratio in &report.ratios {
        let s = format!("baseline ÷ shared, {}", ratio.protocol.name());
        for (metric, value) in [
            ("full-config time", ratio.full_config_time),
            ("server CPU for full config", ratio.initial_server_cpu),
            ("server CPU for single changes", ratio.single_server_cpu),
            ("single-change p99", ratio.single_p99),
            ("peak RSS", ratio.peak_rss),
        ] {
            rows.push(Row::new(&s, metric, Goal::Report, "×", value));
        }
    }
    rows
}

fn shared_rows(s: &str, r: &RunReport, cpus: usize) -> Vec<Row> {
    let mut rows = vec![Row::new(
        s,
        "full config at every client",
        Goal::Below(10.0),
        "s",
        r.initial.all_s,
    )];
    rows.extend(change_rows(
        s,
        r,
        "one endpoint change (file renamed), p99 convergence",
        200.0,
        1000.0,
        cpus,
    ));
    rows.push(Row::new(
        s,
        "server peak RSS",
        Goal::Below(1024.0),
        "MiB",
        Some(r.server.peak_rss as f64 / MIB),
    ));
    rows.push(Row::new(
        s,
        "server memory per connected client",
        Goal::AtMost(64.0),
        "KiB",
        Some(r.server.per_client_bytes / 1024.0),
    ));
    rows
}

/// What bounds a run's single changes on a machine of `cpus` cores shared with the load generator:
/// the push p50, each side's CPU per change, and the least time the two could take together (their
/// CPU summed over the cores), all reported, none a target.
fn push_rows(s: &str, single: &Single, cpus: usize) -> Vec<Row> {
    let per_change =
        |cpu_s: f64| (single.changes > 0).then(|| 1000.0 * cpu_s / single.changes as f64);
    let (server, clients) = (
        per_change(single.server_cpu_s),
        per_change(single.loadgen_cpu_s),
    );
    let floor = server
        .zip(clients)
        .filter(|_| cpus > 0)
        .map(|(a, b)| (a + b) / cpus as f64);
    [
        (
            "— push p50 (snapshot published → last client)",
            single.push.map(|d| d.p50_ms),
        ),
        ("— server CPU per change", server),
        ("— load generator CPU per change", clients),
        ("— both together ÷ cores: the push's floor here", floor),
    ]
    .into_iter()
    .map(|(metric, value)| Row::new(s, metric, Goal::Report, "ms", value))
    .collect()
}

/// A run's single-change p99 (`single_metric`, under `single_ms`) and churn rows (p99 under
/// `churn_ms`, RSS growth), whichever source made the changes; with the p99, what bounds it
/// ([`push_rows`]).
fn change_rows(
    s: &str,
    r: &RunReport,
    single_metric: &str,
    single_ms: f64,
    churn_ms: f64,
    cpus: usize,
) -> Vec<Row> {
    let mut rows = Vec::new();
    if let Some(single) = &r.single {
        rows.push(
            Row::new(
                s,
                single_metric,
                Goal::Below(single_ms),
                "ms",
                single.convergence.map(|d| d.p99_ms),
            )
            .unless(
                single.converged == single.changes,
                &format!("{}/{} converged", single.converged, single.changes),
            ),
        );
        rows.extend(push_rows(s, single, cpus));
    }
    if let Some(churn) = &r.churn {
        rows.push(
            Row::new(
                s,
                &format!("churn {}/s, p99 convergence", churn.rate_per_s),
                Goal::Below(churn_ms),
                "ms",
                churn.convergence.map(|d| d.p99_ms),
            )
            .unless(
                churn.converged == churn.changes,
                &format!("{}/{} converged", churn.converged, churn.changes),
            ),
        );
        rows.push(Row::new(
            s,
            "churn, RSS growth middle → end",
            Goal::AtMost(10.0),
            "%",
            (churn.rss_mid > 0).then(|| {
                100.0 * (churn.rss_end as f64 - churn.rss_mid as f64) / churn.rss_mid as f64
            }),
        ));
    }
    rows
}

impl SuiteReport {
    /// The table, with what it ran on.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let m = &self.machine;
        let _ = writeln!(
            o,
            "xds-load suite{}: commit {}, {} CPUs ({}), {:.1} GiB, load average {:.2} → {:.2}, {:.0} s",
            if self.config.quick { " (--quick)" } else { "" },
            self.commit.as_deref().unwrap_or("unknown"),
            m.cpus,
            m.cpu_model,
            m.memory_gib,
            self.loadavg_start,
            self.loadavg_end,
            self.seconds
        );
        let header = ["scenario", "metric", "target", "measured", "result"];
        let cells: Vec<[String; 5]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.scenario.clone(),
                    r.metric.clone(),
                    r.target.clone(),
                    r.measured_text(),
                    r.result_text(),
                ]
            })
            .collect();
        let mut widths = header.map(|h| h.chars().count());
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |o: &mut String, row: [&str; 5]| {
            let mut text = String::new();
            for (i, (c, w)) in row.iter().zip(widths).enumerate() {
                let pad = w - c.chars().count();
                // Numbers right-aligned, text left-aligned.
                if i == 3 {
                    let _ = write!(text, "{}{c}  ", " ".repeat(pad));
                } else {
                    let _ = write!(text, "{c}{}  ", " ".repeat(pad));
                }
            }
            let _ = writeln!(o, "{}", text.trim_end());
        };
        line(&mut o, header);
        let _ = writeln!(
            o,
            "{}",
            "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1))
        );
        let mut last_scenario = "";
        for row in &cells {
            let scenario = if row[0] == last_scenario { "" } else { &row[0] };
            last_scenario = &row[0];
            line(&mut o, [scenario, &row[1], &row[2], &row[3], &row[4]]);
        }
        let (met, missed) = self.rows.iter().fold((0, 0), |(a, b), r| match r.met {
            Some(true) => (a + 1, b),
            Some(false) => (a, b + 1),
            None => (a, b),
        });
        let _ = writeln!(o, "targets: {met} met, {missed} missed");
        o
    }

    /// Writes the JSON report to `path` (its directory created).
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// `<target>/bench/suite-<unix seconds>.json`.
    pub fn default_json_path(&self) -> PathBuf {
        crate::paths::target_dir()
            .join("bench")
            .join(format!("suite-{}.json", self.started_unix_s))
    }
}

/// The workspace's commit, `-dirty` if it has uncommitted changes.
fn commit(root: &Path) -> Option<String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "--short", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}-dirty") } else { head })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Dist;

    #[test]
    fn the_push_floor_is_both_sides_cpu_per_change_over_the_cores() {
        let single = Single {
            changes: 4,
            server_cpu_s: 1.2,
            loadgen_cpu_s: 0.8,
            push: Some(Dist {
                count: 4,
                p50_ms: 180.0,
                p99_ms: 200.0,
                max_ms: 200.0,
            }),
            ..Single::default()
        };
        let rows = push_rows("s", &single, 2);
        let values: Vec<Option<f64>> = rows.iter().map(|r| r.measured).collect();
        let close = |got: Option<f64>, want: f64| got.is_some_and(|v| (v - want).abs() < 1e-9);
        assert!(close(values[0], 180.0), "{values:?}");
        assert!(close(values[1], 300.0), "{values:?}");
        assert!(close(values[2], 200.0), "{values:?}");
        assert!(close(values[3], 250.0), "{values:?}");
        assert!(rows
            .iter()
            .all(|r| r.goal == Goal::Report && r.met.is_none()));
        // No changes made: nothing per change, no floor.
        let none = push_rows("s", &Single::default(), 2);
        assert!(none.iter().all(|r| r.measured.is_none()), "{none:?}");
    }

    #[test]
    fn rows_say_whether_and_by_how_much_a_target_was_missed() {
        let fast = Row::new("storm", "resync", Goal::Below(15.0), "s", Some(9.5));
        assert_eq!(fast.met, Some(true));
        assert_eq!(
            (fast.target.as_str(), fast.measured_text()),
            ("< 15.00 s", "9.50 s".into())
        );

        let slow = Row::new("storm", "resync", Goal::Below(15.0), "s", Some(30.0));
        assert_eq!(slow.met, Some(false));
        assert_eq!(slow.result_text(), "MISSED (+15.00 s, 2.0× the target)");

        let never = Row::new("storm", "resync", Goal::Below(15.0), "s", None);
        assert_eq!(never.result_text(), "MISSED (not reached)");

        let bad = Row::new("storm", "violations", Goal::AtMost(0.0), "", Some(3.0));
        assert_eq!(bad.result_text(), "MISSED (+3)");
        assert_eq!(
            Row::new("s", "v", Goal::AtMost(0.0), "", Some(0.0)).met,
            Some(true)
        );

        let low = Row::new(
            "scale-out",
            "share",
            Goal::Within(40.0, 60.0),
            "%",
            Some(31.0),
        );
        assert_eq!(low.result_text(), "MISSED (9.0% below)");
        let high = Row::new(
            "scale-out",
            "share",
            Goal::Within(40.0, 60.0),
            "%",
            Some(61.5),
        );
        assert_eq!(high.result_text(), "MISSED (1.5% above)");
        assert_eq!(
            Row::new("s", "share", Goal::Within(40.0, 60.0), "%", Some(60.0)).met,
            Some(true)
        );

        let info = Row::new("s", "per client", Goal::Report, "KiB", Some(700.0));
        assert_eq!((info.met, info.result_text()), (None, String::new()));

        let partial = Row::new("s", "p99", Goal::Below(250.0), "ms", Some(100.0))
            .unless(false, "3/5 converged");
        assert_eq!(partial.result_text(), "MISSED (3/5 converged)");
        // A reported figure has no target to miss.
        assert_eq!(info.clone().unless(false, "x"), info);
    }
}
