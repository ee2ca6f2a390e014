//! Traffic through Envoy: one request per new connection, answers tallied by body (each backend answers
//! with its zone), failures counted.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Per-request deadline. Envoy answers in milliseconds; anything slower counts as a failure.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// One request through Envoy: `Ok(body)` for a 200 (body trimmed), `Err(reason)` for anything else.
pub fn request(addr: SocketAddr, host: &str) -> Result<String, String> {
    match crate::http::get(addr, host, "/", REQUEST_TIMEOUT) {
        Ok(r) if r.status == 200 => Ok(r.text().trim().to_string()),
        Ok(r) => Err(format!("HTTP {} {}", r.status, r.text().trim())),
        Err(e) => Err(format!("{:?}: {e}", e.kind())),
    }
}

#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Successful answers by body.
    pub by_body: BTreeMap<String, usize>,
    pub failures: usize,
    /// Failure reasons with their counts.
    pub errors: BTreeMap<String, usize>,
}

impl Tally {
    pub fn record(&mut self, outcome: &Result<String, String>) {
        match outcome {
            Ok(body) => *self.by_body.entry(body.clone()).or_default() += 1,
            Err(e) => {
                self.failures += 1;
                *self.errors.entry(e.clone()).or_default() += 1;
            }
        }
    }

    pub fn total(&self) -> usize {
        self.by_body.values().sum::<usize>() + self.failures
    }

    pub fn count(&self, body: &str) -> usize {
        self.by_body.get(body).copied().unwrap_or(0)
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Tally) {
        for (body, n) in &other.by_body {
            *self.by_body.entry(body.clone()).or_default() += n;
        }
        self.failures += other.failures;
        for (e, n) in &other.errors {
            *self.errors.entry(e.clone()).or_default() += n;
        }
    }

    /// True if every request succeeded with `body`.
    pub fn all(&self, body: &str) -> bool {
        self.total() > 0 && self.count(body) == self.total()
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} requests:", self.total())?;
        for (body, n) in &self.by_body {
            write!(f, " {body}={n}")?;
        }
        write!(f, " failed={}", self.failures)?;
        if !self.errors.is_empty() {
            let reasons: Vec<String> = self
                .errors
                .iter()
                .map(|(e, n)| format!("{e} ×{n}"))
                .collect();
            write!(f, " ({})", reasons.join("; "))?;
        }
        Ok(())
    }
}

/// Sends `n` requests, one every `interval`, and tallies them.
pub fn send(addr: SocketAddr, host: &str, n: usize, interval: Duration) -> Tally {
    let mut tally = Tally::default();
    for i in 0..n {
        if i > 0 {
            std::thread::sleep(interval);
        }
        tally.record(&request(addr, host));
    }
    tally
}

/// Sends a request every `interval` until `stop` is set (from another thread), and tallies them.
pub fn send_until_stopped(
    addr: SocketAddr,
    host: &str,
    interval: Duration,
    stop: &AtomicBool,
) -> Tally {
    let mut tally = Tally::default();
    while !stop.load(Ordering::SeqCst) {
        tally.record(&request(addr, host));
        std::thread::sleep(interval);
    }
    tally
}

/// What happened while traffic moved to a new place.
#[derive(Debug, Clone)]
pub struct Switch {
    /// From `since` to the first answer from the target (`None`: it never came).
    pub elapsed: Option<Duration>,
    /// Failed requests from `since` until the target answered.
    pub failures_before: usize,
    /// Everything seen: before the switch and during the settle period after it.
    pub tally: Tally,
    /// What answered during the settle period after the switch.
    pub after: Tally,
}

impl Switch {
    pub fn switched(&self) -> bool {
        self.elapsed.is_some()
    }

    pub fn millis(&self) -> u128 {
        self.elapsed.map(|d| d.as_millis()).unwrap_or(u128::MAX)
    }
}

/// Sends a request every `interval` until one is answered by `target` (or `timeout` passes since
/// `since`), then `settle` more requests to see that traffic stays there. Every failure is counted.
pub fn until_served_by(
    addr: SocketAddr,
    host: &str,
    target: &str,
    since: Instant,
    interval: Duration,
    timeout: Duration,
    settle: usize,
) -> Switch {
    let mut first = true;
    watch_switch(target, since, timeout, settle, || {
        if !first {
            std::thread::sleep(interval);
        }
        first = false;
        let outcome = request(addr, host);
        Some((Instant::now(), outcome))
    })
}

/// Takes outcomes from `next` (each with the instant it was known) until one is `Ok(target)`, or
/// `timeout` passes since `since`, then `settle` more to see that traffic stays there. `next` may
/// return `None` when nothing came within its own wait; the watch then goes on until `timeout`, and
/// a settle period ends early. Shared by the Envoy traffic here and the proxyless gRPC clients'
/// calls ([`crate::grpc_client`]).
pub fn watch_switch(
    target: &str,
    since: Instant,
    timeout: Duration,
    settle: usize,
    mut next: impl FnMut() -> Option<(Instant, Result<String, String>)>,
) -> Switch {
    let mut tally = Tally::default();
    let mut elapsed = None;
    loop {
        if let Some((at, outcome)) = next() {
            tally.record(&outcome);
            if outcome.as_deref() == Ok(target) {
                elapsed = Some(at.saturating_duration_since(since));
                break;
            }
        }
        if since.elapsed() > timeout {
            break;
        }
    }
    let failures_before = tally.failures;
    let mut after = Tally::default();
    if elapsed.is_some() {
        for _ in 0..settle {
            let Some((_, outcome)) = next() else { break };
            tally.record(&outcome);
            after.record(&outcome);
        }
    }
    Switch {
        elapsed,
        failures_before,
        tally,
        after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outcomes as a scripted source: each with an instant `ms` after `t0`.
    fn script(
        t0: Instant,
        outcomes: &[(u64, Result<&str, &str>)],
    ) -> Vec<(Instant, Result<String, String>)> {
        outcomes
            .iter()
            .map(|(ms, o)| {
                let at = t0 + Duration::from_millis(*ms);
                (at, o.map(str::to_string).map_err(str::to_string))
            })
            .collect()
    }

    #[test]
    fn a_switch_counts_failures_before_the_target_and_settles_after_it() {
        let t0 = Instant::now();
        let mut outcomes = script(
            t0,
            &[
                (1, Ok("b")),
                (2, Err("refused")),
                (3, Err("refused")),
                (40, Ok("c")),
                (41, Ok("c")),
                (42, Err("reset")),
                (43, Ok("x")),
            ],
        )
        .into_iter();
        let sw = watch_switch("c", t0, Duration::from_secs(60), 2, || outcomes.next());
        assert_eq!(sw.elapsed, Some(Duration::from_millis(40)));
        assert_eq!(sw.failures_before, 2);
        assert_eq!((sw.tally.count("b"), sw.tally.count("c")), (1, 2));
        assert_eq!(sw.tally.failures, 3, "{}", sw.tally);
        // The settle period is the two outcomes after the switch, no more.
        assert_eq!(sw.after.total(), 2);
        assert_eq!(sw.after.failures, 1);
        assert_eq!(outcomes.next().map(|(_, o)| o), Some(Ok("x".to_string())));
    }

    #[test]
    fn no_switch_once_the_timeout_passed_and_a_silent_source_ends_the_settle_period() {
        let since = Instant::now();
        let mut outcomes = script(since, &[(0, Ok("b")), (0, Err("refused"))]).into_iter();
        // Each outcome takes 2 ms to come; the timeout is 1 ms.
        let sw = watch_switch("c", since, Duration::from_millis(1), 10, || {
            std::thread::sleep(Duration::from_millis(2));
            outcomes.next()
        });
        assert!(!sw.switched());
        assert_eq!(sw.millis(), u128::MAX);
        assert_eq!(
            sw.tally.total(),
            1,
            "stops at the first outcome past the timeout"
        );

        let mut outcomes = script(since, &[(1, Ok("c"))]).into_iter();
        let sw = watch_switch("c", since, Duration::from_secs(60), 10, || outcomes.next());
        assert!(sw.switched());
        assert_eq!(sw.after.total(), 0);
    }
}
