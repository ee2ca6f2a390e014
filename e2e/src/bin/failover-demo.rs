//! Locality failover, live: xds-server, six backends in three zones, one Envoy in us-east1-b, and
//! traffic through it while zones die and come back. Exits non-zero if a failover does not happen.
//!
//! Run: `bash scripts/demo.sh` (or `cargo run --release -p e2e --bin failover-demo`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use e2e::envoy::Envoy;
use e2e::failover::{Failover, EVERY};
use e2e::topology::{Mesh, Zone, CLUSTER, EAST_B, EAST_C, HOST, WEST_A};
use e2e::traffic::{self, Switch};

/// A short base ejection time so that a restored zone gets its traffic back within seconds.
const DEMO_POLICY: &str = "\
kind: FailoverPolicy
metadata: {name: demo, namespace: demo}
spec:
  outlierDetection: {consecutive5xx: 3, interval: 1s, baseEjectionTime: 3s, maxEjectionPercent: 100}
";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nDEMO FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    println!("Locality failover demo");
    println!("======================\n");
    println!("  service  {HOST} (cluster {CLUSTER}), 2 backends in each zone:");
    println!("           us-east1: us-east1-b, us-east1-c    us-west1: us-west1-a");
    println!("  client   one Envoy in us-east1/us-east1-b\n");

    print!("  xds-server binary ... ");
    flush();
    let build = Instant::now();
    let bin = e2e::paths::server_bin();
    println!("{} ({:.1} s)", bin.display(), build.elapsed().as_secs_f64());
    let started = Instant::now();
    print!("  starting xds-server and 6 backends ... ");
    flush();
    let mesh = Mesh::start_with_policy(2, Some(DEMO_POLICY));
    println!("xDS on {}", mesh.server.addr());
    print!(
        "  starting Envoy {} ... ",
        e2e::paths::envoy_bin().display()
    );
    flush();
    let mut scene = Failover::start(mesh, "demo-client");
    println!(
        "serving on {}, admin on {}\n",
        scene.addr(),
        scene.envoy.admin_addr()
    );

    // 1. Steady state.
    println!("1. Everything up. Envoy's priorities for {CLUSTER} (from its admin /clusters):");
    print_priorities(&scene.envoy);
    let tally = scene.send(50, EVERY);
    println!("   50 requests -> {}", describe(&tally));
    if !tally.all(EAST_B.zone) {
        return Err(format!(
            "expected every request to be served by {}, got {tally}",
            EAST_B.zone
        ));
    }

    // 2. Lose the local zone.
    println!("\n2. Killing both backends in {} ...", EAST_B.zone);
    let sw = scene.kill_zone(EAST_B, EAST_C, Duration::from_secs(15), 50);
    report(&sw, EAST_C, &[WEST_A.zone])?;

    // 3. Lose the region's other zone.
    println!("\n3. Killing both backends in {} ...", EAST_C.zone);
    let sw = scene.kill_zone(EAST_C, WEST_A, Duration::from_secs(15), 50);
    report(&sw, WEST_A, &[])?;

    // 4. Bring everything back: ejected hosts are retried after baseEjectionTime.
    println!(
        "\n4. Restarting the backends of {} and {} ...",
        EAST_B.zone, EAST_C.zone
    );
    let sw = scene.restore_zones(&[EAST_B, EAST_C], EAST_B, Duration::from_secs(60), 50);
    if !sw.switched() {
        return Err(format!(
            "traffic did not return to {} within 60 s: {}",
            EAST_B.zone, sw.tally
        ));
    }
    println!(
        "   -> traffic back in {} after {:.1} s, {} failed requests ({} sent)",
        EAST_B.zone,
        sw.elapsed.unwrap_or_default().as_secs_f64(),
        sw.tally.failures,
        sw.tally.total()
    );
    println!("      (outlier detection retries an ejected host after baseEjectionTime, 3 s here)");
    if !sw.after.all(EAST_B.zone) {
        return Err(format!(
            "traffic did not stay in {}: {}",
            EAST_B.zone, sw.after
        ));
    }
    // us-east1-c's hosts may still be ejected; wait until Envoy trusts every host again.
    let t0 = Instant::now();
    let envoy = &scene.envoy;
    let cleared = e2e::poll(Duration::from_secs(60), Duration::from_millis(100), || {
        (!envoy.hosts(CLUSTER).iter().any(|h| h.failed_outlier_check)).then_some(())
    });
    if cleared.is_none() {
        return Err("some hosts stayed ejected for 60 s after coming back".to_string());
    }
    println!(
        "      all hosts back in rotation {:.1} s later",
        t0.elapsed().as_secs_f64()
    );

    // 5. Planned drain through the endpoints file: health from the source moves traffic at once.
    println!(
        "\n5. Marking {} not ready in the endpoints file (a planned drain) ...",
        EAST_B.zone
    );
    let sw = scene.set_zone_ready(EAST_B, false, EAST_C, Duration::from_secs(15), 50);
    report(&sw, EAST_C, &[WEST_A.zone])?;
    println!("   ... and ready again:");
    let sw = scene.set_zone_ready(EAST_B, true, EAST_B, Duration::from_secs(15), 50);
    report(&sw, EAST_B, &[])?;

    println!(
        "\nDone: every failover happened ({:.1} s).",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn report(sw: &Switch, to: Zone, forbidden: &[&str]) -> Result<(), String> {
    if !sw.switched() {
        return Err(format!("traffic never reached {}: {}", to.zone, sw.tally));
    }
    println!(
        "   -> traffic moved to {} in {} ms with {} failed requests ({} sent, one every {} ms)",
        to.zone,
        sw.millis(),
        sw.failures_before + sw.after.failures,
        sw.tally.total(),
        EVERY.as_millis()
    );
    for zone in forbidden {
        if sw.tally.count(zone) > 0 {
            return Err(format!("traffic leaked to {zone}: {}", sw.tally));
        }
    }
    if !sw.after.all(to.zone) {
        return Err(format!("traffic did not stay in {}: {}", to.zone, sw.after));
    }
    Ok(())
}

fn print_priorities(envoy: &Envoy) {
    let hosts = envoy.hosts(CLUSTER);
    let mut levels: Vec<(u32, Vec<String>)> = Vec::new();
    for h in hosts {
        match levels.iter_mut().find(|(p, _)| *p == h.priority) {
            Some((_, zones)) => {
                if !zones.contains(&h.zone) {
                    zones.push(h.zone.clone());
                }
            }
            None => levels.push((h.priority, vec![h.zone.clone()])),
        }
    }
    for (p, zones) in levels {
        println!("     P{p}: {}", zones.join(", "));
    }
}

fn describe(tally: &traffic::Tally) -> String {
    let total = tally.total().max(1);
    let mut parts: Vec<String> = tally
        .by_body
        .iter()
        .map(|(zone, n)| format!("{zone} {}%", n * 100 / total))
        .collect();
    if tally.failures > 0 {
        parts.push(format!("failed {}", tally.failures));
    }
    parts.join(", ")
}

fn flush() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
}
