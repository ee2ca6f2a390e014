//! Envoy's priority load, simulated: how Envoy splits a cluster's requests across its priority levels
//! given each level's healthy and total host counts, the overprovisioning factor and the panic
//! threshold. Pure arithmetic, apart from the text that explains it ([`super::explain`]), so the
//! admin API, the metrics and the tests predict the same split.
//!
//! # Envoy's algorithm, as implemented by [`expected_load`]
//!
//!
//! Source: `LoadBalancerBase::recalculatePerPriorityState`, `distributeLoad`,
//! `recalculatePerPriorityPanic`, `isHostSetInPanic` and `recalculateLoadInTotalPanic` in Envoy's
//! `source/extensions/load_balancing_policies/common/load_balancer_impl.cc` (formerly
//! `source/common/upstream/load_balancer_impl.cc`); documented in the architecture overview, "Priority
//! levels" and "Panic threshold". Everything is integer percent:
//!
//! 1. health(P) = min(100, overprovisioning_factor × healthy(P) / total(P)) (integer division; factor in
//!    percent, 140 = 1.4; a level without hosts has health 0).
//! 2. normalized total health = min(100, Σ health(P)).
//! 3. If it is > 0: walking the levels in order with 100 to give, load(P) = min(left, health(P) × 100 /
//!    normalized total health); what is left after the last level (rounding) goes to the first level
//!    with health > 0.
//! 4. Panic (threshold = min(100, healthy_panic_threshold)):
//!    * threshold 0 and normalized total health 0: Envoy sets load(P0) = 100 as a placeholder; nothing
//!      is in panic, so requests find no healthy host in P0 and fail with "no healthy upstream" (unless
//!      P0 still has a healthy host whose health score rounded down to 0).
//!    * otherwise a level is in panic iff normalized total health < 100 and 100 × healthy / total <
//!      threshold (P0 with no hosts counts as 0% healthy). A level in panic balances over all its hosts,
//!      healthy or not.
//!    * if every level is in panic ("total panic"), the load is split by host count instead: load(P) =
//!      100 × total(P) / Σ total, remainder to the first non-empty level.
//!
//! Notes. The documentation's tables round differently in two rows (docs: 25%/25%/20% healthy →
//! 36/36/28 and, panic table, 5%/65% → 7/93); Envoy's code, and this module, give 37/35/28 and 8/92
//! because the rounding remainder goes to the first level with health. DEGRADED hosts are left out
//! (Envoy gives them load only after all healthy capacity; this server never sends DEGRADED).
//! UNHEALTHY and DRAINING hosts count as not healthy, as in Envoy. Outlier ejections and active health
//! checks happen inside Envoy: the control plane's prediction assumes none; feed Envoy's own view of
//! host health into [`expected_load`] to account for them. `weighted_priority_health` and excluded
//! hosts are not used by this server's clusters.

use serde::Serialize;

/// Envoy's priority load for a set of levels. See the module documentation for the algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadSplit {
    /// Health score per level: min(100, overprovisioning factor × healthy / total).
    pub health: Vec<u32>,
    /// min(100, Σ health).
    pub normalized_total_health: u32,
    /// Expected percent of requests per level. Sums to 100, or is all zero with `no_healthy_upstream`.
    pub load: Vec<u32>,
    /// Per level: in panic (balances over all its hosts, healthy or not).
    pub panic: Vec<bool>,
    /// Every level in panic: load split by host count.
    pub total_panic: bool,
    /// Requests fail with 503 "no healthy upstream": no hosts at all, or nothing healthy where Envoy
    /// looks with panic mode disabled.
    pub no_healthy_upstream: bool,
}

/// Envoy's expected per-priority load for levels given as `(healthy, total)` host counts, priority 0
/// first, with the cluster's overprovisioning factor (percent, 140 = 1.4) and healthy panic threshold
/// (percent; 0 disables panic). See the module documentation for the algorithm and its source.
pub fn expected_load(
    levels: &[(usize, usize)],
    overprovisioning_factor: u32,
    panic_threshold: u32,
) -> LoadSplit {
    let n = levels.len();
    let factor = u64::from(overprovisioning_factor);
    let health: Vec<u32> = levels
        .iter()
        .map(|&(healthy, total)| {
            if total == 0 {
                0
            } else {
                (factor * healthy as u64 / total as u64).min(100) as u32
            }
        })
        .collect();
    let normalized = health.iter().map(|&h| u64::from(h)).sum::<u64>().min(100) as u32;
    let mut split = LoadSplit {
        health,
        normalized_total_health: normalized,
        load: vec![0; n],
        panic: vec![false; n],
        total_panic: false,
        no_healthy_upstream: false,
    };
    if n == 0 {
        split.no_healthy_upstream = true;
        return split;
    }

    // recalculatePerPriorityState / distributeLoad; nothing to distribute when normalized is 0.
    let mut left = 100u32;
    for (load, &h) in split.load.iter_mut().zip(&split.health) {
        *load = left.min((h * 100).checked_div(normalized).unwrap_or(0));
        left -= *load;
    }
    // Rounding: to the first level with health (none when normalized is 0; panic handles that).
    if let Some(first) = split.health.iter().position(|&h| h > 0) {
        split.load[first] += left;
    }

    // recalculatePerPriorityPanic.
    let threshold = panic_threshold.min(100);
    if threshold == 0 && normalized == 0 {
        // Envoy puts 100 on P0 so the loads sum to 100, and no level is in panic: requests go to P0 and
        // are served only if P0 has a healthy host (one whose health score rounded down to 0).
        if levels[0].0 > 0 {
            split.load[0] = 100;
        } else {
            split.no_healthy_upstream = true;
        }
        return split;
    }
    for (panic, &(healthy, total)) in split.panic.iter_mut().zip(levels) {
        // isHostSetInPanic: 100 × healthy / total < threshold, exactly (no overprovisioning here).
        *panic = normalized != 100 && (healthy as u64) * 100 < u64::from(threshold) * total as u64;
    }
    if split.panic.iter().all(|&p| p) {
        // recalculateLoadInTotalPanic: by host count, health ignored.
        split.total_panic = true;
        let hosts: usize = levels.iter().map(|&(_, total)| total).sum();
        if hosts == 0 {
            split.load = vec![0; n];
            split.no_healthy_upstream = true;
            return split;
        }
        let mut left = 100u32;
        for (load, &(_, total)) in split.load.iter_mut().zip(levels) {
            *load = (100 * total / hosts) as u32;
            left -= *load;
        }
        if let Some(first) = levels.iter().position(|&(_, total)| total > 0) {
            split.load[first] += left;
        }
    }
    split
}

#[cfg(test)]
mod tests;
