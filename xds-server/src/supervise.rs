//! Background tasks the server cannot do without (the snapshot publisher, every source, the policy
//! watchers, the mergers, the file watchers, the admin and metrics servers) are spawned through
//! [`spawn`]: if one panics, fails or simply returns, the [`Supervisor`] hears of it, and `app` turns
//! health NOT_SERVING, logs the task and its cause, and exits non-zero so Kubernetes restarts the
//! process. Envoys keep their last configuration meanwhile; a server that kept running with a dead
//! source would instead serve a configuration that silently stopped changing.
//!
//! Process-wide, like the metrics: tasks are spawned deep inside the sources, and threading a handle
//! through every constructor would say nothing more. Without an installed supervisor (unit and
//! in-process tests) an ending task is only logged.
//!
//! Debug builds only: `XDS_FAIL_TASK=NAME` makes the task called NAME panic after it has run for
//! `XDS_FAIL_TASK_AFTER` (default 1s), so tests can watch the server notice a source dying.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::mpsc;
use tracing::error;

/// How a supervised task ended. Every ending is a failure: these tasks run for the process's life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Returned,
    Failed(String),
    Panicked(String),
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Returned => write!(f, "returned"),
            Ending::Failed(error) => write!(f, "failed: {error}"),
            Ending::Panicked(message) => write!(f, "panicked: {message}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEnded {
    pub task: String,
    pub ending: Ending,
}

impl std::fmt::Display for TaskEnded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "background task `{}` {}", self.task, self.ending)
    }
}

/// What a task's future may return: nothing, or a result whose error is the cause.
pub trait TaskOutput {
    fn ending(self) -> Ending;
}

impl TaskOutput for () {
    fn ending(self) -> Ending {
        Ending::Returned
    }
}

impl<E: std::fmt::Display> TaskOutput for Result<(), E> {
    fn ending(self) -> Ending {
        match self {
            Ok(()) => Ending::Returned,
            // `{:#}` prints an anyhow error's chain of causes.
            Err(error) => Ending::Failed(format!("{error:#}").replace('\n', " ")),
        }
    }
}

static SUPERVISOR: OnceLock<mpsc::UnboundedSender<TaskEnded>> = OnceLock::new();

/// Hears of every supervised task that ends. One per process.
pub struct Supervisor {
    ended: mpsc::UnboundedReceiver<TaskEnded>,
}

impl Supervisor {
    /// Installs the process's supervisor; `None` if one is installed already.
    pub fn install() -> Option<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        SUPERVISOR.set(tx).ok()?;
        Some(Self { ended: rx })
    }

    /// The first supervised task to end.
    pub async fn task_ended(&mut self) -> TaskEnded {
        match self.ended.recv().await {
            Some(ended) => ended,
            None => std::future::pending().await, // the sender is static: never
        }
    }
}

/// `task` wrapped so that its end, however it comes, is reported to the supervisor.
pub fn supervised<F>(name: impl Into<String>, task: F) -> impl Future<Output = ()> + Send + 'static
where
    F: Future + Send + 'static,
    F::Output: TaskOutput,
{
    let name = name.into();
    let fault = injected_fault(&name);
    watch_ending(name, task, fault, report)
}

async fn watch_ending<F>(
    name: String,
    task: F,
    fault: Option<Duration>,
    report: impl FnOnce(TaskEnded) + Send + 'static,
) where
    F: Future + Send + 'static,
    F::Output: TaskOutput,
{
    let run = async move {
        match fault {
            Some(after) => {
                // Run the real task for a while, so the fault hits a server that was working.
                let _ = tokio::time::timeout(after, task).await;
                panic!("fault injected by XDS_FAIL_TASK");
            }
            None => task.await.ending(),
        }
    };
    let ending = match AssertUnwindSafe(run).catch_unwind().await {
        Ok(ending) => ending,
        Err(panic) => Ending::Panicked(panic_message(panic.as_ref())),
    };
    report(TaskEnded { task: name, ending });
}

/// Spawns `task` on the current runtime, [`supervised`].
pub fn spawn<F>(name: impl Into<String>, task: F) -> tokio::task::JoinHandle<()>
where
    F: Future + Send + 'static,
    F::Output: TaskOutput,
{
    tokio::spawn(supervised(name, task))
}

fn report(ended: TaskEnded) {
    match SUPERVISOR.get() {
        Some(tx) if tx.send(ended.clone()).is_ok() => {}
        _ => error!(task = %ended.task, ending = %ended.ending, "background task stopped"),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

fn injected_fault(name: &str) -> Option<Duration> {
    if !cfg!(debug_assertions) {
        return None;
    }
    let target = std::env::var("XDS_FAIL_TASK").ok()?;
    if target != name {
        return None;
    }
    let after = std::env::var("XDS_FAIL_TASK_AFTER")
        .ok()
        .and_then(|text| xds_core::config::scalar::parse_duration(&text).ok())
        .unwrap_or(Duration::from_secs(1));
    Some(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ending_of<F>(task: F, fault: Option<Duration>) -> TaskEnded
    where
        F: Future + Send + 'static,
        F::Output: TaskOutput,
    {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(watch_ending(
            "under-test".into(),
            task,
            fault,
            move |ended| {
                let _ = tx.send(ended);
            },
        ));
        rx.recv().await.unwrap()
    }

    fn boom(message: &str) {
        panic!("{message}")
    }

    #[tokio::test]
    async fn every_way_a_task_can_end_is_told_apart() {
        let returned = ending_of(async {}, None).await;
        assert_eq!(returned.ending, Ending::Returned);
        assert_eq!(returned.task, "under-test");
        let failed = async { Err::<(), _>(anyhow::anyhow!("the watch broke").context("listing")) };
        assert_eq!(
            ending_of(failed, None).await.ending,
            Ending::Failed("listing: the watch broke".into())
        );
        let name = "x".to_string();
        assert_eq!(
            ending_of(async move { boom(&format!("{name} failed")) }, None)
                .await
                .ending,
            Ending::Panicked("x failed".into())
        );
        assert_eq!(
            ending_of(async { boom("index out of range") }, None)
                .await
                .ending,
            Ending::Panicked("index out of range".into())
        );
    }

    #[tokio::test]
    async fn an_injected_fault_stops_a_task_that_would_run_forever() {
        let ended = ending_of(
            std::future::pending::<()>(),
            Some(Duration::from_millis(10)),
        )
        .await;
        assert_eq!(
            ended.ending,
            Ending::Panicked("fault injected by XDS_FAIL_TASK".into())
        );
    }

    #[tokio::test]
    async fn without_a_supervisor_an_ending_task_is_only_logged() {
        // Must not panic or block.
        spawn("orphan", async {}).await.unwrap();
    }
}
