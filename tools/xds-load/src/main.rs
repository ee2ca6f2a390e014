//! `xds-load`: load benchmark for `xds-server` — simulated Envoy ADS clients (SotW and Delta) over real
//! gRPC on 127.0.0.1 against the real server binary, with a baseline run of the server with sharing
//! turned off. Defaults are the issue's target scenario. See `tools/xds-load/src/lib.rs` and the README's
//! "Load benchmark" section.
//!
//! ```sh
//! bash scripts/bench.sh                      # release build + the target scenario
//! target/release/xds-load --clients 200 --services 50 --protocol delta --no-baseline
//! ```

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use xds_load::{self as load, Config, Protocol};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SourceArg {
    /// The endpoints file, rewritten for each change.
    File,
    /// The test Kubernetes API server, in process; each change an EndpointSlice write.
    Kubernetes,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProtocolArg {
    Sotw,
    Delta,
    Both,
}

/// Load benchmark for xds-server: simulated Envoy ADS clients over real gRPC on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Where the server reads the services from.
    #[arg(long, value_enum, default_value = "file")]
    source: SourceArg,
    /// `--source kubernetes`: endpoint changes in the rollout burst (0: none).
    #[arg(long, default_value_t = 500)]
    burst_changes: usize,
    /// Simulated Envoy clients (one ADS stream each).
    #[arg(long, default_value_t = 5000)]
    clients: usize,
    /// Services in the endpoints file (one Envoy cluster each).
    #[arg(long, default_value_t = 500)]
    services: usize,
    /// Endpoints per service, spread over every zone.
    #[arg(long, default_value_t = 12)]
    endpoints_per_service: usize,
    /// Regions; clients and endpoints are spread over regions × zones.
    #[arg(long, default_value_t = 3)]
    regions: usize,
    /// Zones per region.
    #[arg(long, default_value_t = 3)]
    zones: usize,
    /// ADS flavour of the clients.
    #[arg(long, value_enum, default_value = "both")]
    protocol: ProtocolArg,
    /// Single endpoint changes to time (one at a time).
    #[arg(long, default_value_t = 20)]
    changes: usize,
    /// Least time between two single changes, ms.
    #[arg(long, default_value_t = 1000)]
    change_interval_ms: u64,
    /// Endpoint changes per second in the churn phase (0: no churn).
    #[arg(long, default_value_t = 50.0)]
    churn_rate: f64,
    /// Length of the churn phase, seconds.
    #[arg(long, default_value_t = 60.0)]
    churn_seconds: f64,
    /// During churn, rewrite the endpoints file every this many ms with the changes due (0: every
    /// change on its own; the file source needs ~150 ms of quiet to take a file).
    #[arg(long, default_value_t = 200)]
    churn_write_interval_ms: u64,
    /// Also run against a server with sharing turned off (`--baseline-flag`) and print the ratios.
    #[arg(long, overrides_with = "no_baseline")]
    baseline: bool,
    /// Skip the baseline runs.
    #[arg(long, overrides_with = "baseline")]
    no_baseline: bool,
    /// Run the churn phase against the baseline server too.
    #[arg(long)]
    baseline_churn: bool,
    /// The server flag that turns sharing off.
    #[arg(long, default_value = "--no-shared-cache", allow_hyphen_values = true)]
    baseline_flag: String,
    /// The xds-server binary (default: $XDS_SERVER_BIN, else target/release/xds-server).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Clients per HTTP/2 connection (1: one connection per client, as Envoy).
    #[arg(long, default_value_t = 1)]
    clients_per_connection: usize,
    /// Connections opened at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Seconds the clients may take to get their first full config.
    #[arg(long, default_value_t = 300)]
    initial_timeout: u64,
    /// Seconds one change may take to converge before it counts as missed.
    #[arg(long, default_value_t = 30)]
    change_timeout: u64,
    /// Print the report as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    json_file: Option<PathBuf>,
    /// No progress on stderr.
    #[arg(long)]
    quiet: bool,
    /// Run the whole suite (these load scenarios, the reconnect storm, the scale-out across two
    /// replicas) and print one table of targets (what scripts/bench.sh runs).
    #[arg(long)]
    suite: bool,
    /// The suite at 500 clients with short phases, about two minutes (implies --suite).
    #[arg(long)]
    quick: bool,
    /// Where the suite writes its JSON report (default: <target>/bench/suite-<unix time>.json).
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Suite: skip the load scenarios (full config, changes, churn, baseline).
    #[arg(long)]
    no_load: bool,
    /// Suite: skip the reconnect storm.
    #[arg(long)]
    no_storm: bool,
    /// Suite: skip the scale-out across two replicas.
    #[arg(long)]
    no_scaleout: bool,
    /// Suite: skip the Kubernetes source's scenarios (EndpointSlice changes, churn, burst).
    #[arg(long)]
    no_kubernetes: bool,
    /// `--source file`: write the endpoints file as JSON (which the server reads several times
    /// faster than YAML) instead of YAML.
    #[arg(long)]
    endpoints_json: bool,
    /// Suite, scale-out: the replicas' --max-connection-age in seconds (default 60, 8 with --quick).
    #[arg(long)]
    max_connection_age_s: Option<f64>,
    /// Suite, scale-out: the replicas' --max-connection-age-grace in seconds (default 10, 1 with --quick).
    #[arg(long)]
    max_connection_age_grace_s: Option<f64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = Config {
        clients: args.clients,
        services: args.services,
        endpoints_per_service: args.endpoints_per_service,
        regions: args.regions,
        zones: args.zones,
        protocols: match args.protocol {
            ProtocolArg::Sotw => vec![Protocol::Sotw],
            ProtocolArg::Delta => vec![Protocol::Delta],
            ProtocolArg::Both => vec![Protocol::Sotw, Protocol::Delta],
        },
        changes: args.changes,
        change_interval_ms: args.change_interval_ms,
        churn_rate: args.churn_rate,
        churn_seconds: args.churn_seconds,
        churn_write_interval_ms: args.churn_write_interval_ms,
        baseline: !args.no_baseline,
        baseline_churn: args.baseline_churn,
        baseline_flag: args.baseline_flag.clone(),
        server_bin: args
            .server_bin
            .clone()
            .unwrap_or_else(load::default_server_bin),
        clients_per_connection: args.clients_per_connection,
        connect_concurrency: args.connect_concurrency,
        initial_timeout_s: args.initial_timeout,
        change_timeout_s: args.change_timeout,
        progress: !args.quiet,
        endpoints_json: args.endpoints_json,
    };
    let _ = args.baseline; // the default; `--baseline` exists to undo an earlier `--no-baseline`
    if args.suite || args.quick {
        return run_suite(&args, config).await;
    }
    if let SourceArg::Kubernetes = args.source {
        let options = load::kube::KubeOptions {
            burst_changes: args.burst_changes,
        };
        let report = load::kube::run_with(&config, &options).await?;
        if let Some(path) = &args.json_file {
            std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        }
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", report.human());
        }
        return Ok(());
    }
    let report = load::run(&config).await?;
    if let Some(path) = &args.json_file {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.human());
    }
    Ok(())
}

async fn run_suite(args: &Args, load: Config) -> anyhow::Result<()> {
    let mut suite = if args.quick {
        load::suite::SuiteConfig::quick(load)
    } else {
        load::suite::SuiteConfig::full(load)
    };
    suite.run_load = !args.no_load;
    if args.no_storm {
        suite.storm = None;
    }
    if args.no_scaleout {
        suite.scaleout = None;
    }
    suite.kubernetes = (!args.no_kubernetes).then_some(load::kube::KubeOptions {
        burst_changes: args.burst_changes,
    });
    if let (Some(age), Some(s)) = (args.max_connection_age_s, &mut suite.scaleout) {
        s.max_connection_age_s = age;
    }
    if let (Some(grace), Some(s)) = (args.max_connection_age_grace_s, &mut suite.scaleout) {
        s.grace_s = grace;
    }
    let report = load::suite::run(&suite).await?;
    let path = args
        .json_out
        .clone()
        .unwrap_or_else(|| report.default_json_path());
    report.write_json(&path)?;
    print!("{}", report.table());
    println!("JSON: {}", path.display());
    Ok(())
}
