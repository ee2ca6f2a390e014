//! The Prometheus endpoint against a live server and real Envoys: readiness, and counters that move
//! with what the Envoys are sent and acknowledge.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use e2e::modes::XdsProtocol;
use e2e::topology::{Mesh, EAST_B};

e2e::both_protocols!(metrics_follow_pushes_acks_and_convergence);

const WAIT: Duration = Duration::from_secs(10);

const POLICY: &str = "kind: FailoverPolicy\nmetadata:\n  name: mesh\n  namespace: \"*\"\nspec:\n  outlierDetection:\n    consecutive5xx: 3\n";

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    // Retried: on a loaded CI machine one attempt can time out while a scrape is being rendered.
    let mut last = None;
    let got = e2e::poll(WAIT, Duration::from_millis(100), || {
        match e2e::http::get(addr, "metrics", path, Duration::from_secs(5)) {
            Ok(r) => Some((r.status, r.text())),
            Err(e) => {
                last = Some(e);
                None
            }
        }
    });
    got.unwrap_or_else(|| panic!("GET http://{addr}{path} failed: {last:?}"))
}

/// Samples by their full name with labels, e.g. `xds_pushes_total{type="EDS"}`.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn metric(addr: SocketAddr, name: &str) -> f64 {
    samples(&get(addr, "/metrics").1)
        .get(name)
        .copied()
        .unwrap_or(0.0)
}

fn metrics_follow_pushes_acks_and_convergence(protocol: XdsProtocol) {
    let mut mesh = Mesh::start_with_policy(2, Some(POLICY)).protocol(protocol);
    let addr = mesh.server.metrics_addr();
    assert_eq!(get(addr, "/healthz").0, 200);
    // The file source is complete at once; the first snapshot is built right after start, possibly
    // a moment after the ports accept.
    let ready = e2e::poll(Duration::from_secs(5), Duration::from_millis(20), || {
        (get(addr, "/readyz").0 == 200).then_some(())
    });
    assert!(
        ready.is_some(),
        "/readyz never became 200 with a complete file source"
    );

    let _envoy = mesh.envoy("metrics-b", EAST_B);
    let p = match protocol {
        XdsProtocol::Sotw => "sotw",
        XdsProtocol::Delta => "delta",
    };
    let connected = format!("xds_connected_clients{{protocol=\"{p}\"}}");
    assert_eq!(metric(addr, &connected), 1.0);
    let text = get(addr, "/metrics").1;
    let all = samples(&text);
    for t in ["CDS", "EDS", "LDS", "RDS"] {
        assert!(
            all.get(&format!("xds_pushes_total{{type=\"{t}\"}}"))
                .is_some_and(|v| *v >= 1.0),
            "no {t} push counted:\n{text}"
        );
    }
    assert!(all["xds_push_bytes_total{type=\"EDS\"}"] > 0.0);
    assert_eq!(all["xds_ready"], 1.0);
    assert!(all["xds_cache_locality_classes"] >= 1.0, "{text}");
    assert!(all["xds_cache_bytes"] > 0.0, "{text}");
    // The Envoy's own zone is healthy: its class sends everything to priority 0.
    let p0 = all
        .iter()
        .find(|(k, _)| {
            k.starts_with("xds_expected_priority_load_percent")
                && k.contains("zone=us-east1-b")
                && k.contains("priority=\"0\"")
        })
        .map(|(_, v)| *v);
    assert_eq!(p0, Some(100.0), "{text}");

    // An endpoint change: pushed to the Envoy, acknowledged, measured.
    let converged = "xds_convergence_seconds_count{type=\"EDS\"}";
    let before = metric(addr, converged);
    let eds_before = metric(addr, "xds_pushes_total{type=\"EDS\"}");
    mesh.set_zone_ready(EAST_B, false);
    let moved = e2e::poll(WAIT, Duration::from_millis(50), || {
        (metric(addr, converged) > before).then_some(())
    });
    assert!(moved.is_some(), "no EDS convergence observed");
    assert!(metric(addr, "xds_pushes_total{type=\"EDS\"}") > eds_before);
    assert!(metric(addr, "xds_source_events_total{source=\"file\"}") >= 1.0);
    assert_eq!(metric(addr, "xds_nacks_total{type=\"EDS\"}"), 0.0);

    // A broken policy edit is counted as a failed reload (and changes nothing); a good one as a success.
    let policy_file = mesh.dir().join("policies").join("policy.yaml");
    std::fs::write(&policy_file, POLICY.replace("outlierDetection", "bogus")).unwrap();
    let failed = e2e::poll(WAIT, Duration::from_millis(50), || {
        (metric(addr, "xds_policy_reloads_total{result=\"failure\"}") >= 1.0).then_some(())
    });
    assert!(failed.is_some(), "a rejected policy file was not counted");
    std::fs::write(&policy_file, POLICY.replace('3', "4")).unwrap();
    let reloaded = e2e::poll(WAIT, Duration::from_millis(50), || {
        (metric(addr, "xds_policy_reloads_total{result=\"success\"}") >= 1.0).then_some(())
    });
    assert!(reloaded.is_some(), "a good policy reload was not counted");
}
