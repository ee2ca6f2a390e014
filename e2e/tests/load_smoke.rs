//! The benchmark suite (`xds-load --suite`, `scripts/bench.sh`) at tiny scale against the real server
//! binary, so the tool cannot rot: the load scenarios (both protocols, shared and baseline, single
//! changes and a short churn), the reconnect storm and the scale-out across two replicas with a
//! seconds-long maximum connection age. Every client must get its full config, every change must reach
//! every client, no response may be empty or partial, every report field the docs quote must be filled
//! in, and the suite's table must have every row with a measured value (performance is not asserted).

use xds_load::scaleout::ScaleoutSettings;
use xds_load::storm::StormSettings;
use xds_load::suite::{Goal, SuiteConfig};
use xds_load::{self as load, Config, Mode, Protocol};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_suite_measures_every_figure_at_small_scale() {
    // It times xDS exchanges: no other test's servers and Envoys beside it (as when it was a test
    // binary of its own).
    let _alone = e2e::alone::alone();
    let config = Config {
        clients: 20,
        services: 10,
        endpoints_per_service: 3,
        regions: 3,
        zones: 3,
        protocols: vec![Protocol::Sotw, Protocol::Delta],
        changes: 3,
        change_interval_ms: 300,
        churn_rate: 5.0,
        churn_seconds: 2.0,
        churn_write_interval_ms: 200,
        baseline: true,
        baseline_churn: false,
        baseline_flag: "--no-shared-cache".into(),
        server_bin: e2e::paths::server_bin(),
        // Two clients per connection: the shared-connection path runs too.
        clients_per_connection: 2,
        connect_concurrency: 4,
        initial_timeout_s: 60,
        change_timeout_s: 10,
        progress: true,
        // The endpoints file as JSON: the server's JSON path runs end to end here (every other test
        // writes YAML).
        endpoints_json: true,
    };
    let suite_config = SuiteConfig {
        load: config,
        storm: Some(StormSettings {
            clients: 20,
            timeout_s: 30,
        }),
        scaleout: Some(ScaleoutSettings {
            clients: 20,
            max_connection_age_s: 2.0,
            grace_s: 0.5,
            sample_every_s: 1.0,
            timeout_s: 30,
        }),
        // The Kubernetes source's scenarios have their own smoke test, below.
        kubernetes: None,
        run_load: true,
        quick: false,
    };
    let suite = load::suite::run(&suite_config).await.expect("suite run");
    println!("{}", suite.table());
    let report = suite.load.as_ref().expect("the load scenarios ran");
    println!("{}", report.human());

    let names: Vec<String> = report.runs.iter().map(|r| r.name()).collect();
    assert_eq!(
        names,
        [
            "sotw/shared",
            "sotw/baseline",
            "delta/shared",
            "delta/baseline"
        ]
    );
    for r in &report.runs {
        let n = r.name();
        assert_eq!(r.stream_failures, 0, "{n}: {:?}", r.first_failure);
        assert_eq!(r.connections, 10, "{n}");
        assert_eq!(r.initial.complete, 20, "{n}: every client gets full config");
        let all = r.initial.all_s.expect("all clients complete");
        assert!(all > 0.0 && all < 60.0, "{n}: {all}");
        assert!(r.initial.per_client.is_some() && r.initial.bytes > 0, "{n}");

        let single = r.single.as_ref().expect("single changes ran");
        assert_eq!(
            (single.changes, single.converged),
            (3, 3),
            "{n}: {single:?}"
        );
        assert!(single.missing_clients.is_empty(), "{n}");
        let conv = single.convergence.expect("convergence measured");
        assert!(conv.p50_ms > 0.0 && conv.p99_ms >= conv.p50_ms && conv.max_ms >= conv.p99_ms);
        // Rename → published, from the server's log (the rename is read at once, no debounce).
        let floor = single
            .publish_floor
            .expect("publish floor from the server log");
        assert!(floor.p50_ms > 0.0, "{n}: {floor:?}");
        assert!(
            conv.max_ms >= floor.p50_ms,
            "{n}: converged before it was published?"
        );
        assert!(single.push.is_some() && single.bytes > 0, "{n}");
        assert!(
            single.first_ms.is_some() && single.after_first.is_some(),
            "{n}"
        );
        assert_eq!(single.each_ms.len(), 3, "{n}");
        assert!(single.each_ms.iter().all(Option::is_some), "{n}");

        match r.mode {
            Mode::Shared => {
                let churn = r.churn.as_ref().expect("churn ran on the shared server");
                assert_eq!((churn.offered, churn.changes), (10, 10), "{n}: 5/s for 2 s");
                assert_eq!(churn.converged, churn.changes, "{n}: {churn:?}");
                assert!(churn.convergence.is_some() && churn.publishes > 0, "{n}");
                assert!(
                    churn.rss_start > 0 && churn.rss_mid > 0 && churn.rss_end > 0,
                    "{n}"
                );
                assert!(churn.bytes > 0, "{n}");
            }
            Mode::Baseline => assert!(r.churn.is_none(), "{n}: no churn by default"),
        }
        let s = &r.server;
        assert!(
            s.idle_rss > 0 && s.connected_rss > 0 && s.peak_rss >= s.connected_rss,
            "{n}"
        );
        assert!(s.peak_rss_before_churn > 0 && s.cpu_s > 0.0, "{n}");
        assert!(s.per_client_bytes.is_finite(), "{n}");
        assert_eq!(s.warnings, 0, "{n}: the server warned");
        assert!(
            r.bytes_total >= r.initial.bytes && r.responses_total > 0,
            "{n}"
        );
    }
    assert_eq!(report.ratios.len(), 2, "a ratio per protocol");
    for ratio in &report.ratios {
        assert!(ratio.full_config_time.is_some() && ratio.initial_server_cpu.is_some());
        assert!(ratio.single_p99.is_some() && ratio.peak_rss.is_some());
    }
    assert!(!report.target_scenario);
    assert_eq!(report.targets.len(), 2 * 5, "five targets per shared run");
    let json = serde_json::to_value(report).expect("report serialises");
    assert!(json["runs"][0]["single"]["convergence"]["p99_ms"].is_number());
    assert!(report.human().contains("baseline (--no-shared-cache)"));

    for storm in &suite.storm {
        let p = &storm.protocol;
        assert_eq!(
            storm.resynced, 20,
            "storm/{p}: every client back: {storm:?}"
        );
        assert_eq!(
            (storm.violations, storm.violations_before),
            (0, 0),
            "storm/{p}: {:?}",
            storm.first_violation
        );
        assert!(
            storm.stream_failures >= 20,
            "storm/{p}: every stream broke at the kill"
        );
    }
    for s in &suite.scaleout {
        let p = &s.protocol;
        assert!(s.full_config_s.is_some(), "scale-out/{p}: {s:?}");
        assert_eq!(
            s.split_connected.on.iter().sum::<usize>(),
            20,
            "scale-out/{p}"
        );
        assert!(s.failover_s.is_some(), "scale-out/{p}: all moved: {s:?}");
        assert_eq!(s.violations, 0, "scale-out/{p}: {:?}", s.first_violation);
        assert!(
            s.connections_opened > 20 && !s.after_restart.is_empty(),
            "scale-out/{p}: clients reconnected at their age: {s:?}"
        );
    }
    let scenarios: Vec<&str> = suite.rows.iter().map(|r| r.scenario.as_str()).collect();
    for name in [
        "sotw/shared (20 clients)",
        "sotw/baseline (20 clients)",
        "delta/shared (20 clients)",
        "delta/baseline (20 clients)",
        "baseline ÷ shared, sotw",
        "baseline ÷ shared, delta",
        "storm/sotw (20 clients)",
        "storm/delta (20 clients)",
        "scale-out/sotw (2 replicas, 20 clients, age 2s)",
        "scale-out/delta (2 replicas, 20 clients, age 2s)",
    ] {
        assert!(
            scenarios.contains(&name),
            "no rows for {name}: {scenarios:?}"
        );
    }
    // 10 per shared run (6 targets, the push p50 and what bounds it), 1 per baseline run, 5 ratios
    // per protocol, 4 per storm, 6 per scale-out.
    assert_eq!(
        suite.rows.len(),
        2 * (10 + 1 + 5 + 4 + 6),
        "{:#?}",
        suite.rows
    );
    for row in &suite.rows {
        let value = row.measured.unwrap_or(f64::NAN);
        assert!(
            value.is_finite(),
            "{} / {}: not measured",
            row.scenario,
            row.metric
        );
        assert_eq!(row.met.is_some(), row.goal != Goal::Report, "{row:?}");
    }
    let table = suite.table();
    assert!(table.contains("kill one replica") && table.contains("targets: "));
    let json = serde_json::to_value(&suite).expect("suite report serialises");
    assert_eq!(
        json["rows"].as_array().map(Vec::len),
        Some(suite.rows.len())
    );
    assert!(json["storm"][0]["resync_all_s"].is_number());
    assert!(json["scaleout"][0]["after_restart"][0]["on"].is_array());
}

/// `xds-load --source kubernetes` at tiny scale: the server on the test API server, every change an
/// EndpointSlice write. Every change (single, churn, burst) must reach every client, and the floor
/// must come from the server's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_generator_drives_the_kubernetes_source_at_small_scale() {
    let _alone = e2e::alone::alone();
    let config = Config {
        clients: 10,
        services: 5,
        endpoints_per_service: 3,
        regions: 1,
        zones: 3,
        protocols: vec![Protocol::Delta],
        changes: 2,
        change_interval_ms: 200,
        churn_rate: 5.0,
        churn_seconds: 1.0,
        churn_write_interval_ms: 200,
        baseline: false,
        baseline_churn: false,
        baseline_flag: "--no-shared-cache".into(),
        server_bin: e2e::paths::server_bin(),
        clients_per_connection: 1,
        connect_concurrency: 4,
        initial_timeout_s: 60,
        change_timeout_s: 10,
        progress: true,
        endpoints_json: false,
    };
    let options = load::kube::KubeOptions { burst_changes: 6 };
    let report = load::kube::run_with(&config, &options)
        .await
        .expect("kubernetes load run");
    println!("{}", report.human());

    let runs = &report.report.runs;
    assert_eq!(runs.len(), 1);
    let r = &runs[0];
    assert_eq!(r.stream_failures, 0, "{:?}", r.first_failure);
    assert_eq!(r.initial.complete, 10, "every client gets full config");
    let single = r.single.as_ref().expect("single changes ran");
    assert_eq!((single.changes, single.converged), (2, 2), "{single:?}");
    let conv = single.convergence.expect("convergence measured");
    let floor = single
        .publish_floor
        .expect("publish floor from the server log");
    assert!(
        conv.max_ms >= floor.p50_ms,
        "converged before it was published?"
    );
    assert!(single.push.is_some(), "{single:?}");
    assert!(single.file_reload.is_none(), "no file here");
    let churn = r.churn.as_ref().expect("churn ran");
    assert_eq!((churn.offered, churn.changes), (5, 5), "5/s for 1 s");
    assert_eq!(churn.converged, churn.changes, "{churn:?}");
    assert_eq!(report.bursts.len(), 1);
    let burst = &report.bursts[0];
    assert_eq!((burst.services, burst.changes), (2, 6), "{burst:?}");
    assert_eq!(burst.converged, 6, "{burst:?}");
    assert!(burst.all_ms.is_some() && burst.publishes > 0, "{burst:?}");
    assert_eq!(r.server.warnings, 0, "the server warned");
    // One for the single changes, two for the churn (p99, RSS), one for the burst.
    assert_eq!(report.report.targets.len(), 4);
    // The suite's rows for this source: single p99 (with the push p50, each side's CPU per change and
    // the floor they make), churn p99 and RSS, the burst; all measured.
    let rows = load::suite::kube_rows(&report);
    assert_eq!(rows.len(), 8, "{rows:#?}");
    for row in &rows {
        assert!(row.measured.is_some_and(f64::is_finite), "{row:?}");
        assert_eq!(row.met.is_some(), row.goal != Goal::Report, "{row:?}");
    }
    assert_eq!(rows.iter().filter(|r| r.met.is_some()).count(), 4);
    let json = serde_json::to_value(&report).expect("report serialises");
    assert_eq!(json["source"], "kubernetes");
    assert!(json["bursts"][0]["all_ms"].is_number());
}
