//! "This file's content changed and is stable": the file watching shared by the endpoints file and the
//! failover policy files.
//!
//! A watch covers the files of one directory that pass a name filter (a single file is its parent
//! directory with a filter for its name: editors and config tools replace files by renaming a new one
//! over them, which a watch on the file itself would miss). Changes are reported in batches of
//! [`FileChange`]s, each one a file whose bytes differ from what was last reported:
//!
//! * notify events are debounced: a batch is read once the directory has been quiet for
//!   [`DEBOUNCE`] (or [`MAX_BATCH_DELAY`] after the first event, so a busy directory cannot starve it);
//! * a half-written file is never reported: every file is read twice, [`STABILITY_RECHECK`] apart, and
//!   only identical reads count; otherwise the batch is retried after another quiet period;
//! * every [`POLL_INTERVAL`] the files' (mtime, length) are compared with the last scan, in case notify
//!   events were lost (network file systems, overflowing queues, Kubernetes ConfigMap symlink swaps).
//!
//! The first batch reports every matching file that exists when the watch starts.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, warn};

/// Quiet period after the last event before files are read.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// Upper bound on how long events can keep postponing a read.
pub const MAX_BATCH_DELAY: Duration = Duration::from_millis(500);
/// Delay between the two reads that must agree for content to count as stable.
pub const STABILITY_RECHECK: Duration = Duration::from_millis(50);
/// Fallback poll of (mtime, length).
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Keeps a watch alive; dropping it stops watching.
pub struct WatchHandle {
    _watcher: Option<notify::RecommendedWatcher>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHandle")
            .field("notify", &self._watcher.is_some())
            .finish()
    }
}

/// One file whose stable content differs from what was last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// `dir.join(file name)`.
    pub path: PathBuf,
    /// `None`: the file no longer exists.
    pub content: Option<Vec<u8>>,
}

/// The directory and file name of a single watched file (`endpoints.yaml` → `.` and `endpoints.yaml`).
pub fn split_file_path(path: &Path) -> anyhow::Result<(PathBuf, String)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} does not name a file", path.display()))?
        .to_string();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name))
}

/// Watches the files in `dir` whose names pass `filter` and calls `on_change` (on a tokio task) with
/// every batch of stable changes. Needs a tokio runtime; fails if `dir` cannot be watched.
pub fn watch_stable_files<P, F>(
    dir: PathBuf,
    filter: P,
    on_change: F,
) -> anyhow::Result<WatchHandle>
where
    P: Fn(&str) -> bool + Send + Sync + 'static,
    F: FnMut(Vec<FileChange>) + Send + 'static,
{
    watch_with(dir, filter, on_change, true, POLL_INTERVAL)
}

fn watch_with<P, F>(
    dir: PathBuf,
    filter: P,
    mut on_change: F,
    use_notify: bool,
    poll_interval: Duration,
) -> anyhow::Result<WatchHandle>
where
    P: Fn(&str) -> bool + Send + Sync + 'static,
    F: FnMut(Vec<FileChange>) + Send + 'static,
{
    let runtime = tokio::runtime::Handle::try_current()
        .context("watching files needs a running tokio runtime")?;
    let filter: Arc<dyn Fn(&str) -> bool + Send + Sync> = Arc::new(filter);
    let (poke_tx, mut poke_rx) = mpsc::unbounded_channel::<()>();

    let watcher = if use_notify {
        let relevant = filter.clone();
        let tx = poke_tx.clone();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
                Ok(event) => {
                    if event.need_rescan() || is_relevant(&event, &*relevant) {
                        let _ = tx.send(());
                    }
                }
                Err(err) => {
                    warn!(error = %err, "file watch error; rescanning");
                    let _ = tx.send(());
                }
            })
            .context("creating a file watcher")?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("watching directory {}", dir.display()))?;
        Some(watcher)
    } else {
        None
    };

    let task = runtime.spawn(async move {
        // Keeps the channel open when notify is off, so `recv` simply never fires.
        let _keep_open = poke_tx;
        let mut scanner = Scanner {
            dir,
            filter,
            reported: BTreeMap::new(),
            fingerprints: BTreeMap::new(),
            listing_failed: false,
        };
        let mut poll = tokio::time::interval(poll_interval);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        poll.tick().await;
        let mut first = true;
        loop {
            if !first {
                tokio::select! {
                    _ = poke_rx.recv() => debounce(&mut poke_rx).await,
                    _ = poll.tick() => {
                        if !scanner.fingerprints_changed().await {
                            continue;
                        }
                        debug!(dir = %scanner.dir.display(), "poll noticed a change");
                    }
                }
            }
            first = false;
            loop {
                let (changes, unstable) = scanner.scan().await;
                if !changes.is_empty() {
                    on_change(changes);
                }
                if !unstable {
                    break;
                }
                debounce(&mut poke_rx).await;
            }
        }
    });

    Ok(WatchHandle {
        _watcher: watcher,
        task,
    })
}

fn is_relevant(event: &notify::Event, filter: &(dyn Fn(&str) -> bool + Send + Sync)) -> bool {
    // Our own reads open files; only writes and namespace changes matter.
    if let EventKind::Access(kind) = event.kind {
        if kind != AccessKind::Close(AccessMode::Write) {
            return false;
        }
    }
    event.paths.iter().any(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            // `..data` and friends: Kubernetes swaps a mounted ConfigMap by replacing a symlink.
            .is_some_and(|n| filter(n) || n.starts_with(".."))
    })
}

/// Waits until no event arrived for [`DEBOUNCE`], at most [`MAX_BATCH_DELAY`] in all.
async fn debounce(rx: &mut mpsc::UnboundedReceiver<()>) {
    let deadline = Instant::now() + MAX_BATCH_DELAY;
    loop {
        let quiet_until = (Instant::now() + DEBOUNCE).min(deadline);
        match tokio::time::timeout_at(quiet_until, rx.recv()).await {
            Ok(Some(())) if Instant::now() < deadline => continue,
            _ => return,
        }
    }
}

type Fingerprint = (Option<SystemTime>, u64);

enum Read {
    Content(Vec<u8>),
    Missing,
    Failed(io::Error),
}

async fn read(path: &Path) -> Read {
    match tokio::fs::read(path).await {
        Ok(bytes) => Read::Content(bytes),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Read::Missing,
        Err(err) => Read::Failed(err),
    }
}

struct Scanner {
    dir: PathBuf,
    filter: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    /// What was last reported per file (`None`: reported as gone).
    reported: BTreeMap<PathBuf, Option<Vec<u8>>>,
    fingerprints: BTreeMap<PathBuf, Fingerprint>,
    /// Whether the last listing failed (logged once, not on every poll).
    listing_failed: bool,
}

impl Scanner {
    /// The matching regular files (following symlinks) currently in the directory.
    async fn list(&mut self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut entries = match tokio::fs::read_dir(&self.dir).await {
            Ok(entries) => {
                self.listing_failed = false;
                entries
            }
            Err(err) => {
                if !self.listing_failed {
                    warn!(dir = %self.dir.display(), error = %err, "cannot list the watched directory");
                }
                self.listing_failed = true;
                return out;
            }
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !(self.filter)(name) {
                continue;
            }
            let path = self.dir.join(name);
            if tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file()) {
                out.push(path);
            }
        }
        out.sort();
        out
    }

    async fn current_fingerprints(&mut self) -> BTreeMap<PathBuf, Fingerprint> {
        let mut out = BTreeMap::new();
        for path in self.list().await {
            if let Ok(meta) = tokio::fs::metadata(&path).await {
                out.insert(path, (meta.modified().ok(), meta.len()));
            }
        }
        out
    }

    async fn fingerprints_changed(&mut self) -> bool {
        self.current_fingerprints().await != self.fingerprints
    }

    /// Reads every candidate twice and reports the stable ones that changed. The flag says some file
    /// was still changing (or vanished mid-scan), so the caller should scan again shortly.
    async fn scan(&mut self) -> (Vec<FileChange>, bool) {
        let fingerprints = self.current_fingerprints().await;
        let mut candidates: Vec<PathBuf> = fingerprints.keys().cloned().collect();
        for (path, content) in &self.reported {
            if content.is_some() && !candidates.contains(path) {
                candidates.push(path.clone());
            }
        }
        let mut first = Vec::with_capacity(candidates.len());
        for path in &candidates {
            first.push(read(path).await);
        }
        tokio::time::sleep(STABILITY_RECHECK).await;

        let mut changes = Vec::new();
        let mut unstable = false;
        for (path, first) in candidates.into_iter().zip(first) {
            let content = match (first, read(&path).await) {
                (Read::Content(a), Read::Content(b)) if a == b => Some(a),
                (Read::Missing, Read::Missing) => None,
                (Read::Failed(err), _) | (_, Read::Failed(err)) => {
                    // Not retried in a loop: the next event or poll (a chmod changes the mtime
                    // too) brings it back.
                    warn!(
                        file = %path.display(),
                        error = %err,
                        "cannot read a watched file; keeping what was last read"
                    );
                    continue;
                }
                _ => {
                    debug!(file = %path.display(), "file still changing; waiting for it to settle");
                    unstable = true;
                    continue;
                }
            };
            let known = self.reported.get(&path);
            if known != Some(&content) && !(known.is_none() && content.is_none()) {
                self.reported.insert(path.clone(), content.clone());
                changes.push(FileChange { path, content });
            }
        }
        // Remember the fingerprints seen before reading; a write during the scan shows up on the next
        // poll (or notify event) as a difference.
        self.fingerprints = fingerprints;
        (changes, unstable)
    }
}

/// Calls `on_change` (on a tokio task) after any of `paths` changed, one watch per directory. The
/// first report of each watch (the files as they are now) is passed on too; callers compare contents.
pub fn watch_paths<F>(paths: &[PathBuf], on_change: F) -> anyhow::Result<Vec<WatchHandle>>
where
    F: Fn() + Send + Sync + 'static,
{
    let on_change = Arc::new(on_change);
    let mut by_dir: std::collections::BTreeMap<PathBuf, Vec<String>> = Default::default();
    for path in paths {
        let (dir, name) = split_file_path(path)?;
        by_dir.entry(dir).or_default().push(name);
    }
    by_dir
        .into_iter()
        .map(|(dir, names)| {
            let on_change = on_change.clone();
            watch_stable_files(
                dir.clone(),
                move |name| names.iter().any(|n| n == name),
                move |_changes| on_change(),
            )
            .with_context(|| format!("watching {}", dir.display()))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod testutil {
    //! A self-cleaning temporary directory and file helpers for watcher tests.

    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "xds-server-test-{tag}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("create temp dir");
            Self(path)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }

        pub(crate) fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }

        /// Writes a temporary file and renames it over `name`, as editors do.
        pub(crate) fn replace(&self, name: &str, content: &str) {
            let tmp = self.0.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, content).expect("write temp file");
            std::fs::rename(&tmp, self.0.join(name)).expect("rename over");
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests;
