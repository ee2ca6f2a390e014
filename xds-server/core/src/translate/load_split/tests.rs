use super::*;

/// (what, levels as (healthy, total), expected load, expected per-level panic).
type Case = (
    &'static str,
    &'static [(usize, usize)],
    &'static [u32],
    &'static [bool],
);

fn check(factor: u32, threshold: u32, cases: &[Case]) {
    for (what, levels, load, panic) in cases {
        let got = expected_load(levels, factor, threshold);
        assert_eq!(&got.load[..], &load[..], "{what}: load of {levels:?}");
        assert_eq!(&got.panic[..], &panic[..], "{what}: panic of {levels:?}");
        let sum: u32 = got.load.iter().sum();
        let want = if got.no_healthy_upstream { 0 } else { 100 };
        assert_eq!(sum, want, "{what}: loads sum");
    }
}

const F2: &[bool] = &[false, false];
const T2: &[bool] = &[true, true];
const F3: &[bool] = &[false, false, false];
const T3: &[bool] = &[true, true, true];

/// "Priority levels" in Envoy's architecture overview; hosts chosen so the healthy percentage is the
/// table's (panic threshold 0, as this server's default policy sets it).
#[test]
#[rustfmt::skip]
fn docs_priority_levels_tables() {
    check(140, 0, &[
        ("P0 100%", &[(100, 100), (10, 10)], &[100, 0], F2),
        ("P0 72%", &[(72, 100), (10, 10)], &[100, 0], F2),
        ("P0 71%", &[(71, 100), (10, 10)], &[99, 1], F2),
        ("P0 50%", &[(5, 10), (10, 10)], &[70, 30], F2),
        ("P0 25%", &[(1, 4), (10, 10)], &[35, 65], F2),
        ("P0 0%", &[(0, 4), (10, 10)], &[0, 100], F2),
        // Both levels partly healthy.
        ("71/71", &[(71, 100), (71, 100)], &[99, 1], F2),
        ("50/50", &[(1, 2), (1, 2)], &[70, 30], F2),
        ("25/100", &[(1, 4), (2, 2)], &[35, 65], F2),
        // Normalisation: health 35 + 35 = 70 < 100 is scaled up to 100.
        ("25/25", &[(1, 4), (1, 4)], &[50, 50], F2),
        // Three levels.
        ("100/100/100", &[(1, 1), (1, 1), (1, 1)], &[100, 0, 0], F3),
        ("50/50/100", &[(1, 2), (1, 2), (1, 1)], &[70, 30, 0], F3),
        ("25/25/100", &[(1, 4), (1, 4), (1, 1)], &[35, 35, 30], F3),
        ("0/20/100", &[(0, 5), (1, 5), (1, 1)], &[0, 28, 72], F3),
        // The docs' table says 36/36/28; Envoy's integer code gives the rounding remainder (2)
        // to the first level with health: 35×100/98 = 35, 35, 28 → 98, +2 to P0.
        ("25/25/20", &[(1, 4), (1, 4), (1, 5)], &[37, 35, 28], F3),
    ]);
}

/// Envoy's own unit tests (`LoadBalancerBaseTest` GentleFailover, GentleFailoverWithExtraLevels,
/// PrioritySelection, OverProvisioningFactor in
/// test/extensions/load_balancing_policies/common/load_balancer_impl_base_test.cc), which run with
/// the default panic threshold 50.
#[test]
#[rustfmt::skip]
fn envoy_unit_test_vectors_with_panic_threshold_50() {
    check(140, 50, &[
        ("healthy", &[(1, 1), (1, 1)], &[100, 0], F2),
        ("half", &[(1, 2), (1, 2)], &[70, 30], F2),
        // P0 below the threshold, but total health is 100: no panic.
        ("P0 25%", &[(1, 4), (2, 2)], &[35, 65], F2),
        // Total health 70 < 100, both below 50%: total panic, split by host count.
        ("25/25", &[(1, 4), (1, 4)], &[50, 50], T2),
        ("3 × 25%", &[(1, 4), (1, 4), (1, 4)], &[35, 35, 30], F3),
        ("3 × 20%", &[(1, 5), (1, 5), (1, 5)], &[34, 33, 33], T3),
        ("P2 only, 100%", &[(0, 5), (0, 5), (5, 5)], &[0, 0, 100], F3),
        ("P2 only, 80%", &[(0, 5), (0, 5), (4, 5)], &[0, 0, 100], F3),
        ("P2 only, 40%", &[(0, 5), (0, 5), (2, 5)], &[34, 33, 33], T3),
        ("all down 5/3/2", &[(0, 5), (0, 3), (0, 2)], &[50, 30, 20], T3),
        ("total panic rounding", &[(0, 5), (2, 6), (1, 3)], &[37, 42, 21], T3),
        ("1 vs 1 down", &[(0, 1), (0, 1)], &[50, 50], T2),
        ("1 vs 2 down", &[(0, 1), (0, 2)], &[34, 66], T2),
        ("P2 healthy", &[(0, 1), (0, 2), (1, 1)], &[0, 0, 100], F3),
    ]);
    check(100, 50, &[("factor 100", &[(2, 4), (2, 4)], &[50, 50], F2)]);
}

/// "Panic threshold" in the architecture overview: a level is in panic only while the normalized
/// total health is below 100, and the split stays health-based unless every level is in panic.
#[test]
#[rustfmt::skip]
fn docs_panic_threshold_table() {
    check(140, 50, &[
        ("P1 healthy, P0 25%", &[(1, 4), (1, 1)], &[35, 65], F2),
        ("P1 healthy, P0 0%", &[(0, 4), (1, 1)], &[0, 100], F2),
        // Docs: 7/93. Health 7 + 91 = 98 → 7, 92, remainder 1 to P0 → 8/92. Only P0 in panic.
        ("5%/65%", &[(5, 100), (65, 100)], &[8, 92], &[true, false]),
    ]);
}

#[test]
fn nothing_healthy() {
    // Panic disabled (this server's default): nothing can be served.
    let s = expected_load(&[(0, 3), (0, 3), (0, 2)], 140, 0);
    assert_eq!(s.load, vec![0, 0, 0]);
    assert!(s.no_healthy_upstream && !s.total_panic);
    assert_eq!(s.panic, vec![false; 3]);
    assert_eq!(s.normalized_total_health, 0);
    // Panic enabled: total panic, by host count.
    let s = expected_load(&[(0, 3), (0, 3), (0, 2)], 140, 50);
    assert_eq!(s.load, vec![38, 37, 25]);
    assert!(s.total_panic && !s.no_healthy_upstream);
    // No levels at all.
    let s = expected_load(&[], 140, 0);
    assert!(s.load.is_empty() && s.no_healthy_upstream);
    // A healthy P0 host whose health score rounds down to 0 still gets P0's placeholder 100%.
    let s = expected_load(&[(1, 200), (0, 1)], 140, 0);
    assert_eq!(s.health, vec![0, 0]);
    assert_eq!(s.load, vec![100, 0]);
    assert!(!s.no_healthy_upstream);
}

#[test]
fn health_scores_and_caps() {
    let s = expected_load(&[(4, 5), (3, 5), (1, 1)], 140, 0);
    assert_eq!(s.health, vec![100, 84, 100]);
    assert_eq!(s.normalized_total_health, 100);
    assert_eq!(s.load, vec![100, 0, 0]);
    // A factor of 200: half healthy is still fully healthy.
    assert_eq!(expected_load(&[(1, 2), (1, 1)], 200, 0).load, vec![100, 0]);
    // Panic threshold above 100 is capped at 100.
    let s = expected_load(&[(1, 2), (0, 2)], 140, 250);
    assert_eq!(s.panic, vec![true, true]);
    assert_eq!(s.load, vec![50, 50]);
}
