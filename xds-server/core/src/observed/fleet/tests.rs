use super::*;
use crate::policy::Ratio;

const CLUSTER: &str = "web.shop:8080";

fn zone(z: &str) -> Locality {
    Locality::new("eu", z, "")
}

fn enforce() -> FleetFailover {
    FleetFailover {
        mode: FleetMode::Enforce,
        min_reporters: 2,
        min_requests: 20,
        error_ratio: Ratio::new(0.5).unwrap(),
        window: Duration::from_secs(10),
        eject_for: Duration::from_secs(30),
        max_ejected_percent: 50,
    }
}

/// Zones a, b, c, d with 2 endpoints each, and the given reports (zone, reporters, requests, errors).
fn cluster(settings: FleetFailover, reports: &[(&str, u32, u64, u64)]) -> FleetCluster {
    FleetCluster {
        cluster: CLUSTER.to_string(),
        service: ServiceId::new("shop", "web"),
        port: 8080,
        settings,
        endpoints: ["a", "b", "c", "d"].map(|z| (zone(z), 2)).into(),
        windows: reports
            .iter()
            .map(|&(z, reporters, requests, errors)| LocalityWindow {
                cluster: CLUSTER.to_string(),
                locality: zone(z),
                reporters,
                requests,
                errors,
            })
            .collect(),
    }
}

fn ejected(outcome: &Outcome) -> Vec<String> {
    outcome
        .ejections
        .of(CLUSTER)
        .iter()
        .map(|l| l.zone.clone())
        .collect()
}

fn kinds(outcome: &Outcome) -> Vec<(TransitionKind, String)> {
    outcome
        .transitions
        .iter()
        .map(|t| (t.kind, t.locality.zone.clone()))
        .collect()
}

#[test]
fn a_locality_failing_for_enough_clients_is_ejected_with_its_evidence() {
    let mut verdicts = FleetVerdicts::new();
    let now = Instant::now();
    let out = verdicts.evaluate(
        now,
        &[cluster(enforce(), &[("a", 2, 40, 20), ("b", 3, 100, 1)])],
    );
    assert_eq!(ejected(&out), ["a"]);
    assert_eq!(kinds(&out), [(TransitionKind::Ejected, "a".to_string())]);
    let t = &out.transitions[0];
    assert_eq!(
        t.evidence,
        Evidence {
            reporters: 2,
            requests: 40,
            errors: 20
        }
    );
    assert_eq!(t.until, Some(now + Duration::from_secs(30)));
    assert_eq!(t.kind.event_kind(), "fleet_ejected");
    assert!(t.reason.contains("error ratio 0.500"), "{}", t.reason);

    let verdict = verdicts.verdict(CLUSTER).unwrap();
    let a = &verdict.localities[0];
    assert_eq!(
        (a.state, a.since, a.until, a.ejections),
        (
            LocalityState::Ejected,
            Some(now),
            Some(now + Duration::from_secs(30)),
            1
        )
    );
    assert_eq!(verdict.localities[1].state, LocalityState::Ok);
    assert_eq!(verdict.localities[1].evidence.requests, 100);

    // Still failing a second later: nothing new happens.
    let out = verdicts.evaluate(
        now + Duration::from_secs(1),
        &[cluster(enforce(), &[("a", 2, 40, 20)])],
    );
    assert_eq!(ejected(&out), ["a"]);
    assert!(out.transitions.is_empty());
}

#[test]
fn one_reporter_is_never_enough_however_bad() {
    let mut verdicts = FleetVerdicts::new();
    let out = verdicts.evaluate(
        Instant::now(),
        &[cluster(enforce(), &[("a", 1, 10_000, 10_000)])],
    );
    assert!(out.ejections.is_empty());
    assert!(out.transitions.is_empty());
    assert_eq!(
        verdicts.verdict(CLUSTER).unwrap().localities[0].state,
        LocalityState::Ok
    );
}

#[test]
fn below_min_requests_or_below_the_ratio_nothing_happens() {
    let mut verdicts = FleetVerdicts::new();
    let now = Instant::now();
    // 19 requests (min 20), all failed; 40 requests, 19 failed (ratio 0.475 < 0.5).
    let out = verdicts.evaluate(
        now,
        &[cluster(enforce(), &[("a", 5, 19, 19), ("b", 5, 40, 19)])],
    );
    assert!(out.ejections.is_empty());
    assert!(out.transitions.is_empty());
    // Exactly at the threshold: ejected.
    let out = verdicts.evaluate(now, &[cluster(enforce(), &[("b", 5, 40, 20)])]);
    assert_eq!(ejected(&out), ["b"]);
}

#[test]
fn max_ejected_percent_caps_and_the_worst_ratio_wins() {
    let mut verdicts = FleetVerdicts::new();
    let now = Instant::now();
    // 8 endpoints, 50%: at most 2 zones of 2. Three fail; c is the worst, then a (more requests
    // than d at the same ratio).
    let reports = [("a", 2, 100, 80), ("c", 2, 20, 20), ("d", 2, 50, 40)];
    let out = verdicts.evaluate(now, &[cluster(enforce(), &reports)]);
    assert_eq!(ejected(&out), ["a", "c"]);
    assert_eq!(
        kinds(&out),
        [
            (TransitionKind::Ejected, "c".to_string()),
            (TransitionKind::Ejected, "a".to_string()),
            (TransitionKind::Observed, "d".to_string()),
        ]
    );
    assert!(
        out.transitions[2].reason.contains("maxEjectedPercent 50"),
        "{}",
        out.transitions[2].reason
    );
    let verdict = verdicts.verdict(CLUSTER).unwrap();
    let states: Vec<LocalityState> = verdict.localities.iter().map(|l| l.state).collect();
    assert_eq!(
        states,
        [
            LocalityState::Ejected,
            LocalityState::Ok,
            LocalityState::Ejected,
            LocalityState::Observed
        ]
    );
    // Held back once, reported once.
    let out = verdicts.evaluate(
        now + Duration::from_secs(1),
        &[cluster(enforce(), &reports)],
    );
    assert!(out.transitions.is_empty());

    // 25%: one zone only.
    let mut verdicts = FleetVerdicts::new();
    let out = verdicts.evaluate(
        now,
        &[cluster(
            FleetFailover {
                max_ejected_percent: 25,
                ..enforce()
            },
            &reports,
        )],
    );
    assert_eq!(ejected(&out), ["c"]);
}

#[test]
fn observe_mode_reports_but_never_ejects() {
    let mut verdicts = FleetVerdicts::new();
    let observe = FleetFailover {
        mode: FleetMode::Observe,
        ..enforce()
    };
    let now = Instant::now();
    let out = verdicts.evaluate(now, &[cluster(observe.clone(), &[("a", 3, 60, 60)])]);
    assert!(out.ejections.is_empty());
    assert_eq!(kinds(&out), [(TransitionKind::Observed, "a".to_string())]);
    assert_eq!(out.transitions[0].kind.event_kind(), "fleet_observed");
    assert!(out.transitions[0].reason.contains("observe mode"));
    assert_eq!(
        verdicts.verdict(CLUSTER).unwrap().localities[0].state,
        LocalityState::Observed
    );
    // Once per episode: again only after it recovered and failed anew.
    let later = |s| now + Duration::from_secs(s);
    assert!(verdicts
        .evaluate(later(1), &[cluster(observe.clone(), &[("a", 3, 60, 60)])])
        .transitions
        .is_empty());
    assert!(verdicts
        .evaluate(later(2), &[cluster(observe.clone(), &[("a", 3, 60, 0)])])
        .transitions
        .is_empty());
    let out = verdicts.evaluate(later(3), &[cluster(observe, &[("a", 3, 60, 60)])]);
    assert_eq!(kinds(&out), [(TransitionKind::Observed, "a".to_string())]);
    assert!(out.ejections.is_empty());
}

#[test]
fn restored_after_eject_for_then_re_ejected_on_probation_for_twice_as_long() {
    let mut verdicts = FleetVerdicts::new();
    let t0 = Instant::now();
    let at = |s| t0 + Duration::from_secs(s);
    let failing = [("a", 2, 40, 40)];
    verdicts.evaluate(t0, &[cluster(enforce(), &failing)]);
    // Ejected: no traffic, so no reports, until ejectFor (30s) has passed.
    let out = verdicts.evaluate(at(29), &[cluster(enforce(), &[])]);
    assert_eq!(ejected(&out), ["a"]);
    let out = verdicts.evaluate(at(30), &[cluster(enforce(), &[])]);
    assert!(out.ejections.is_empty());
    assert_eq!(kinds(&out), [(TransitionKind::Restored, "a".to_string())]);
    assert!(out.transitions[0].reason.contains("probation"));
    assert_eq!(
        verdicts.verdict(CLUSTER).unwrap().localities[0].probation_until,
        Some(at(40))
    );
    // Fails again within the window: 60s.
    let out = verdicts.evaluate(at(35), &[cluster(enforce(), &failing)]);
    assert_eq!(ejected(&out), ["a"]);
    assert_eq!(out.transitions[0].until, Some(at(95)));
    assert!(out.transitions[0].reason.contains("again on probation"));
    // Then 120s, 240s, and never more than 300s.
    let mut start = 35;
    for (length, strikes) in [(60, 2), (120, 3), (240, 4), (300, 5), (300, 6)] {
        let v = verdicts.verdict(CLUSTER).unwrap();
        assert_eq!(v.localities[0].until, Some(at(start + length)), "{strikes}");
        assert_eq!(v.localities[0].ejections, strikes);
        let back = start + length;
        let out = verdicts.evaluate(at(back), &[cluster(enforce(), &[])]);
        assert_eq!(kinds(&out), [(TransitionKind::Restored, "a".to_string())]);
        start = back + 1;
        verdicts.evaluate(at(start), &[cluster(enforce(), &failing)]);
    }
}

#[test]
fn a_clean_probation_forgets_the_history() {
    let mut verdicts = FleetVerdicts::new();
    let t0 = Instant::now();
    let at = |s| t0 + Duration::from_secs(s);
    let failing = [("a", 2, 40, 40)];
    verdicts.evaluate(t0, &[cluster(enforce(), &failing)]);
    verdicts.evaluate(at(30), &[cluster(enforce(), &[])]);
    // Healthy traffic through the probation window.
    verdicts.evaluate(at(35), &[cluster(enforce(), &[("a", 2, 40, 0)])]);
    verdicts.evaluate(at(40), &[cluster(enforce(), &[("a", 2, 40, 0)])]);
    let v = verdicts.verdict(CLUSTER).unwrap();
    assert_eq!(
        (v.localities[0].ejections, v.localities[0].probation_until),
        (0, None)
    );
    // A new failure is a first ejection again: 30s.
    let out = verdicts.evaluate(at(100), &[cluster(enforce(), &failing)]);
    assert_eq!(out.transitions[0].until, Some(at(130)));
}

#[test]
fn mode_off_or_observe_restores_at_once() {
    for (mode, reason) in [
        (FleetMode::Off, "fleetFailover is off"),
        (FleetMode::Observe, "mode is observe"),
    ] {
        let mut verdicts = FleetVerdicts::new();
        let now = Instant::now();
        verdicts.evaluate(now, &[cluster(enforce(), &[("a", 2, 40, 40)])]);
        let out = verdicts.evaluate(
            now + Duration::from_secs(1),
            &[cluster(FleetFailover { mode, ..enforce() }, &[])],
        );
        assert!(out.ejections.is_empty(), "{mode}");
        assert_eq!(kinds(&out), [(TransitionKind::Restored, "a".to_string())]);
        assert!(out.transitions[0].reason.contains(reason), "{mode}");
        assert_eq!(
            verdicts.verdict(CLUSTER).is_some(),
            mode == FleetMode::Observe
        );
    }
}

#[test]
fn a_removed_service_port_is_restored_and_forgotten() {
    let mut verdicts = FleetVerdicts::new();
    let now = Instant::now();
    verdicts.evaluate(now, &[cluster(enforce(), &[("a", 2, 40, 40)])]);
    let out = verdicts.evaluate(now, &[]);
    assert!(out.ejections.is_empty());
    assert_eq!(kinds(&out), [(TransitionKind::Restored, "a".to_string())]);
    assert!(out.transitions[0].reason.contains("no longer served"));
    assert!(verdicts.verdicts().is_empty());
    // Back again: a fresh start (a first ejection, not a second).
    let out = verdicts.evaluate(now, &[cluster(enforce(), &[("a", 2, 40, 40)])]);
    assert_eq!(
        out.transitions[0].until,
        Some(now + Duration::from_secs(30))
    );
}

#[test]
fn reports_on_unknown_clusters_or_localities_keep_no_state() {
    let mut verdicts = FleetVerdicts::new();
    let now = Instant::now();
    let mut c = cluster(enforce(), &[]);
    for i in 0..1000 {
        c.windows.push(LocalityWindow {
            cluster: CLUSTER.to_string(),
            locality: Locality::new("eu", &format!("made-up-{i}"), ""),
            reporters: 5,
            requests: 100,
            errors: 100,
        });
        c.windows.push(LocalityWindow {
            cluster: format!("other-{i}"),
            locality: zone("a"),
            reporters: 5,
            requests: 100,
            errors: 100,
        });
    }
    let out = verdicts.evaluate(now, &[c]);
    assert!(out.ejections.is_empty());
    assert!(out.transitions.is_empty());
    let v = verdicts.verdicts();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].localities.len(), 4);
}

#[test]
fn a_locality_that_loses_its_endpoints_is_restored_and_forgotten() {
    let mut verdicts = FleetVerdicts::new();
    let now = Instant::now();
    verdicts.evaluate(now, &[cluster(enforce(), &[("a", 2, 40, 40)])]);
    let mut c = cluster(enforce(), &[]);
    c.endpoints.remove(&zone("a"));
    let out = verdicts.evaluate(now, &[c]);
    assert!(out.ejections.is_empty());
    assert_eq!(kinds(&out), [(TransitionKind::Restored, "a".to_string())]);
    assert_eq!(verdicts.verdict(CLUSTER).unwrap().localities.len(), 3);
}

#[test]
fn windows_are_fetched_once_per_span_and_split_by_cluster() {
    let mut short = cluster(enforce(), &[]);
    let mut long = cluster(
        FleetFailover {
            window: Duration::from_secs(20),
            ..enforce()
        },
        &[],
    );
    long.cluster = "api.shop:9090".to_string();
    let mut third = short.clone();
    third.cluster = "db.shop:5432".to_string();
    short.windows.clear();
    let mut asked = Vec::new();
    let mut clusters = [short, long, third];
    attach_windows(&mut clusters, |span| {
        asked.push(span);
        ["web.shop:8080", "api.shop:9090", "db.shop:5432"]
            .iter()
            .map(|c| LocalityWindow {
                cluster: c.to_string(),
                locality: zone("a"),
                reporters: span.as_secs() as u32,
                requests: 1,
                errors: 0,
            })
            .collect()
    });
    assert_eq!(asked, [Duration::from_secs(10), Duration::from_secs(20)]);
    let seen: Vec<(&str, u32)> = clusters
        .iter()
        .flat_map(|c| c.windows.iter().map(|w| (w.cluster.as_str(), w.reporters)))
        .collect();
    assert_eq!(
        seen,
        [
            ("web.shop:8080", 10),
            ("api.shop:9090", 20),
            ("db.shop:5432", 10)
        ]
    );
}
