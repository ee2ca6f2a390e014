//! CPU-heavy work (a snapshot build, a registry conversion or merge, the metrics' expected-load pass)
//! runs on tokio's blocking threads, never on the runtime threads that serve the xDS streams: a
//! rebuild of thousands of services must not delay every stream's next response behind it.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs `work` on a blocking thread and waits for it; a panic in it resumes here, so the task that
/// asked fails as if it had run the work itself (and its supervisor says so).
///
/// A current-thread runtime (unit tests) runs it in place: a test that lets its tasks settle then
/// sees the result, deterministically.
pub async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    if Handle::current().runtime_flavor() == RuntimeFlavor::CurrentThread {
        return work();
    }
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn the_work_runs_on_another_thread_and_its_panic_comes_back() {
        let caller = std::thread::current().id();
        let worker = super::off_runtime(|| std::thread::current().id()).await;
        assert_ne!(caller, worker);
        let panicked = tokio::spawn(super::off_runtime(|| panic!("translation bug"))).await;
        assert!(panicked.unwrap_err().is_panic());
    }
}
