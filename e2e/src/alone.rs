//! Running a test alone, with no other test's servers or Envoys beside it.
//!
//! All end-to-end tests are one test binary, and libtest runs its tests in parallel, as many at once
//! as the machine has cores. When every test file was its own binary, cargo ran the binaries one after
//! another, so a file with a single test had the machine to itself. A test that measures the machine
//! (the load generator's, which times hundreds of xDS exchanges) keeps that with [`alone`]: it waits
//! until no [`XdsServer`](crate::server::XdsServer) or [`Envoy`](crate::envoy::Envoy) of another test
//! exists, and new ones wait until it is done. Other tests need nothing: they run in parallel as
//! before, two at a time on a two-core machine.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;

struct State {
    /// [`Live`] handles in this process.
    live: usize,
    /// The thread of the test running alone, if one is.
    alone: Option<ThreadId>,
}

static STATE: Mutex<State> = Mutex::new(State {
    live: 0,
    alone: None,
});
static CHANGED: Condvar = Condvar::new();

fn state() -> MutexGuard<'static, State> {
    // A test that panicked while holding the lock changed nothing half-way: the counts are whole.
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Held by every [`XdsServer`](crate::server::XdsServer) and [`Envoy`](crate::envoy::Envoy) handle
/// for its whole life (its process may be stopped and restarted meanwhile).
#[derive(Debug)]
pub(crate) struct Live(());

impl Live {
    /// Waits while another thread's test runs [`alone`], then counts one more handle.
    pub(crate) fn new() -> Live {
        let me = std::thread::current().id();
        let mut s = state();
        while s.alone.is_some_and(|t| t != me) {
            s = CHANGED.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.live += 1;
        Live(())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        state().live -= 1;
        CHANGED.notify_all();
    }
}

/// While held, this test is the only one with servers or Envoys in this process.
#[must_use = "the test runs alone only while the guard is held"]
pub struct Alone(());

/// Waits until no other test has an `XdsServer` or `Envoy` (and no other test runs alone), then keeps
/// other tests from making any until the returned guard is dropped. Call it first in the test, before
/// it makes a server or an Envoy of its own.
pub fn alone() -> Alone {
    let me = std::thread::current().id();
    let mut s = state();
    while s.alone.is_some() || s.live > 0 {
        s = CHANGED.wait(s).unwrap_or_else(|e| e.into_inner());
    }
    s.alone = Some(me);
    Alone(())
}

impl Drop for Alone {
    fn drop(&mut self) {
        state().alone = None;
        CHANGED.notify_all();
    }
}
