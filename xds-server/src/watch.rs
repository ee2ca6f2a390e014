//! "These files' content changed and is stable": the one file watcher, used by every watched file
//! (the endpoints file, policy files, the secrets directory, TLS material, the admin token).
//!
//! A watch covers the files of one directory that pass a filter, and for [`watch_stable_tree`] also
//! the files of its direct subdirectories (the secrets directory: one subdirectory per identity). A
//! single file is its parent directory with a filter for its name: editors and config tools replace
//! files by renaming a new one over them, which a watch on the file itself would miss. Changes are
//! reported in batches of [`FileChange`]s, each one a file whose bytes differ from what was last
//! reported:
//!
//! * notify events are debounced: a batch is read once the directory has been quiet for
//!   [`DEBOUNCE`] (or [`MAX_BATCH_DELAY`] after the first event, so a busy directory cannot starve it);
//! * except a file renamed over a watched name, when the watch takes renames at once
//!   ([`Renames::AtOnce`]): a rename is atomic, so the file is read once, straight away, with no
//!   debounce and no second read. Watches whose files belong together (a certificate and its key,
//!   renamed one after the other) keep [`Renames::Settle`];
//! * a half-written file is never reported: every file is read twice, [`STABILITY_RECHECK`] apart, and
//!   only identical reads count. While any file is still changing nothing is reported and the whole
//!   scan is retried after another quiet period, so a batch is one settled view of the files (a
//!   certificate is not reported without the key written just after it);
//! * every [`POLL_INTERVAL`] the files' (mtime, length) are compared with the last scan, in case notify
//!   events were lost (network file systems, overflowing queues, Kubernetes ConfigMap symlink swaps);
//! * a directory that cannot be listed (removed, unmounted) reports nothing: what was last reported
//!   stands until it can be listed again, rather than every file being taken for deleted.
//!
//! Symlinks are followed, and hidden subdirectories (Kubernetes' `..data` and its timestamped
//! targets) are not descended into: the volume's visible files are links into them. The first batch
//! reports every matching file that exists when the watch starts.

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

/// How a watch takes a file renamed over one of its names (what editors, config tools and atomic
/// writers do: write a temporary file, then rename it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renames {
    /// Read it at once, without waiting for the directory to be quiet or reading twice: the rename
    /// is atomic, so the content is complete. For files that each stand alone (the endpoints file,
    /// policy files), where the wait would only add latency to every change.
    AtOnce,
    /// Like any other change: wait for quiet, read twice. For files that only make sense together
    /// (a certificate and its key, a secrets tree), which are renamed one after the other.
    Settle,
}

/// What a notify event means for the watch loop.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Poke {
    /// A file was renamed over this watched path ([`Renames::AtOnce`] watches only).
    RenamedOver(PathBuf),
    /// Anything else that may concern a watched file.
    Changed,
}

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
    /// `dir.join(file name)`, or `dir.join(subdirectory).join(file name)` in a tree.
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
/// every batch of stable changes; `renames` says whether a file renamed over a watched name is taken
/// at once. Needs a tokio runtime; fails if `dir` cannot be watched.
pub fn watch_stable_files<P, F>(
    dir: PathBuf,
    filter: P,
    renames: Renames,
    on_change: F,
) -> anyhow::Result<WatchHandle>
where
    P: Fn(&str) -> bool + Send + Sync + 'static,
    F: FnMut(Vec<FileChange>) + Send + 'static,
{
    let filter = move |relative: &Path| relative.to_str().is_some_and(&filter);
    watch_with(
        Scope::new(dir, false, filter).renames(renames),
        on_change,
        true,
        POLL_INTERVAL,
    )
}

/// [`watch_stable_files`] one level deeper: the files in `dir` and in its direct (not hidden)
/// subdirectories whose path relative to `dir` (`ca.crt`, `web/tls.crt`) passes `filter`.
pub fn watch_stable_tree<P, F>(dir: PathBuf, filter: P, on_change: F) -> anyhow::Result<WatchHandle>
where
    P: Fn(&Path) -> bool + Send + Sync + 'static,
    F: FnMut(Vec<FileChange>) + Send + 'static,
{
    watch_with(
        Scope::new(dir, true, filter),
        on_change,
        true,
        POLL_INTERVAL,
    )
}

/// What one watch covers.
struct Scope {
    dir: PathBuf,
    /// Also the files of `dir`'s direct subdirectories (hidden ones excepted).
    subdirs: bool,
    /// Takes a file's path relative to `dir`.
    filter: Box<dyn Fn(&Path) -> bool + Send + Sync>,
    renames: Renames,
}

impl Scope {
    fn new(
        dir: PathBuf,
        subdirs: bool,
        filter: impl Fn(&Path) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            dir,
            subdirs,
            filter: Box::new(filter),
            renames: Renames::Settle,
        }
    }

    fn renames(mut self, renames: Renames) -> Self {
        self.renames = renames;
        self
    }

    /// What a relevant event means: a rename over a watched file name, taken at once if the watch
    /// says so (a tree's renames always settle: its files belong together), or a change to settle.
    fn poke(&self, event: &notify::Event) -> Poke {
        use notify::event::{ModifyKind, RenameMode};
        let renamed_over = matches!(
            event.kind,
            EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
        );
        // `To` names the destination alone; `Both` names the source, then the destination.
        match event.paths.last() {
            Some(dest)
                if renamed_over
                    && self.renames == Renames::AtOnce
                    && !self.subdirs
                    && dest.parent() == Some(self.dir.as_path())
                    && dest
                        .strip_prefix(&self.dir)
                        .is_ok_and(|relative| (self.filter)(relative)) =>
            {
                Poke::RenamedOver(dest.clone())
            }
            _ => Poke::Changed,
        }
    }

    /// Whether a notify event may concern a watched file.
    fn is_relevant(&self, event: &notify::Event) -> bool {
        // Our own reads open files; only writes and namespace changes matter.
        if let EventKind::Access(kind) = event.kind {
            if kind != AccessKind::Close(AccessMode::Write) {
                return false;
            }
        }
        event.paths.iter().any(|path| {
            let relative = path.strip_prefix(&self.dir).unwrap_or(path);
            let names: Vec<&str> = relative.iter().filter_map(|n| n.to_str()).collect();
            (self.filter)(relative)
                // `..data` and friends: Kubernetes swaps a mounted volume by replacing a symlink.
                || names.iter().any(|n| n.starts_with(".."))
                // A subdirectory created, renamed or removed as a whole.
                || (self.subdirs && matches!(names.as_slice(), [n] if !n.starts_with('.')))
        })
    }
}

fn watch_with<F>(
    scope: Scope,
    mut on_change: F,
    use_notify: bool,
    poll_interval: Duration,
) -> anyhow::Result<WatchHandle>
where
    F: FnMut(Vec<FileChange>) + Send + 'static,
{
    let runtime = tokio::runtime::Handle::try_current()
        .context("watching files needs a running tokio runtime")?;
    let scope = Arc::new(scope);
    let (poke_tx, mut poke_rx) = mpsc::unbounded_channel::<Poke>();

    let watcher = if use_notify {
        let relevant = scope.clone();
        let tx = poke_tx.clone();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
                Ok(event) => {
                    if event.need_rescan() {
                        let _ = tx.send(Poke::Changed);
                    } else if relevant.is_relevant(&event) {
                        let _ = tx.send(relevant.poke(&event));
                    }
                }
                Err(err) => {
                    warn!(error = %err, "file watch error; rescanning");
                    let _ = tx.send(Poke::Changed);
                }
            })
            .context("creating a file watcher")?;
        let mode = if scope.subdirs {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        watcher
            .watch(&scope.dir, mode)
            .with_context(|| format!("watching directory {}", scope.dir.display()))?;
        Some(watcher)
    } else {
        None
    };

    let name = format!("file watch {}", scope.dir.display());
    let task = runtime.spawn(crate::supervise::supervised(name, async move {
        // Keeps the channel open when notify is off, so `recv` simply never fires.
        let _keep_open = poke_tx;
        let mut scanner = Scanner {
            scope,
            reported: BTreeMap::new(),
            fingerprints: None,
            listing_failed: false,
        };
        let mut poll = tokio::time::interval(poll_interval);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        poll.tick().await;
        let mut first = true;
        loop {
            if !first {
                tokio::select! {
                    Some(poke) = poke_rx.recv() => {
                        let pokes = Pokes::drain(poke, &mut poke_rx);
                        let taken = scanner.report_renamed(&pokes.renamed, &mut on_change).await;
                        if taken && !pokes.changed {
                            continue;
                        }
                        settle(&mut poke_rx, &mut scanner, &mut on_change).await
                    }
                    _ = poll.tick() => {
                        if !scanner.fingerprints_changed().await {
                            continue;
                        }
                        debug!(dir = %scanner.scope.dir.display(), "poll noticed a change");
                    }
                }
            }
            first = false;
            let changes = loop {
                match scanner.scan().await {
                    Some(changes) => break changes,
                    None => settle(&mut poke_rx, &mut scanner, &mut on_change).await,
                }
            };
            if !changes.is_empty() {
                on_change(changes);
            }
        }
        #[allow(unreachable_code)]
        ()
    }));

    Ok(WatchHandle {
        _watcher: watcher,
        task,
    })
}

/// The events queued at one moment, sorted.
#[derive(Debug, Default, PartialEq, Eq)]
struct Pokes {
    /// Files renamed over watched names (each once).
    renamed: Vec<PathBuf>,
    /// Whether any other change is among them.
    changed: bool,
}

impl Pokes {
    /// `first` and every event already queued behind it.
    fn drain(first: Poke, rx: &mut mpsc::UnboundedReceiver<Poke>) -> Self {
        let mut pokes = Self::default();
        for poke in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            match poke {
                Poke::RenamedOver(path) if !pokes.renamed.contains(&path) => {
                    pokes.renamed.push(path)
                }
                Poke::RenamedOver(_) => {}
                Poke::Changed => pokes.changed = true,
            }
        }
        pokes
    }
}

/// Waits for the directory to be quiet for [`DEBOUNCE`] (at most [`MAX_BATCH_DELAY`]), taking
/// files renamed over watched names at once meanwhile: a rename is never held back by another
/// file still being written.
async fn settle<F>(rx: &mut mpsc::UnboundedReceiver<Poke>, scanner: &mut Scanner, on_change: &mut F)
where
    F: FnMut(Vec<FileChange>),
{
    let deadline = Instant::now() + MAX_BATCH_DELAY;
    loop {
        let renamed = debounce(rx, deadline).await;
        if renamed.is_empty() {
            return;
        }
        scanner.report_renamed(&renamed, on_change).await;
    }
}

/// Waits until no event arrived for [`DEBOUNCE`], or until `deadline`: returns nothing then. Returns
/// early with the files renamed over watched names when such an event arrives.
async fn debounce(rx: &mut mpsc::UnboundedReceiver<Poke>, deadline: Instant) -> Vec<PathBuf> {
    loop {
        let quiet_until = (Instant::now() + DEBOUNCE).min(deadline);
        match tokio::time::timeout_at(quiet_until, rx.recv()).await {
            Ok(Some(poke)) => {
                let pokes = Pokes::drain(poke, rx);
                if !pokes.renamed.is_empty() {
                    return pokes.renamed;
                }
                if Instant::now() >= deadline {
                    return Vec::new();
                }
            }
            _ => return Vec::new(),
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

/// The entries of a directory as (name, path); entries whose names are not UTF-8 are skipped.
async fn entries(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        if let Ok(name) = entry.file_name().into_string() {
            out.push((name, entry.path()));
        }
    }
    Ok(out)
}

struct Scanner {
    scope: Arc<Scope>,
    /// What was last reported per file (`None`: reported as gone).
    reported: BTreeMap<PathBuf, Option<Vec<u8>>>,
    /// As of the last scan; `None`: the directory could not be listed.
    fingerprints: Option<BTreeMap<PathBuf, Fingerprint>>,
    /// Whether the last listing failed (logged once, not on every poll).
    listing_failed: bool,
}

impl Scanner {
    /// The matching regular files (following symlinks) now in the watched directory (and its
    /// subdirectories), with their fingerprints; `None` if the directory cannot be listed.
    async fn current_fingerprints(&mut self) -> Option<BTreeMap<PathBuf, Fingerprint>> {
        let scope = &self.scope;
        let top = match entries(&scope.dir).await {
            Ok(top) => {
                self.listing_failed = false;
                top
            }
            Err(err) => {
                if !self.listing_failed {
                    warn!(dir = %scope.dir.display(), error = %err, "cannot list the watched directory; keeping what was last read");
                }
                self.listing_failed = true;
                return None;
            }
        };
        let mut out = BTreeMap::new();
        let mut add = |path: PathBuf, meta: std::fs::Metadata| {
            if meta.is_file() {
                out.insert(path, (meta.modified().ok(), meta.len()));
            }
        };
        for (name, path) in top {
            if (scope.filter)(Path::new(&name)) {
                if let Ok(meta) = tokio::fs::metadata(&path).await {
                    add(path, meta);
                }
                continue;
            }
            if !scope.subdirs || name.starts_with('.') {
                continue;
            }
            if !tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_dir()) {
                continue;
            }
            // A subdirectory that vanished since the listing has no files.
            for (file, file_path) in entries(&path).await.unwrap_or_default() {
                if (scope.filter)(&Path::new(&name).join(file)) {
                    if let Ok(meta) = tokio::fs::metadata(&file_path).await {
                        add(file_path, meta);
                    }
                }
            }
        }
        Some(out)
    }

    async fn fingerprints_changed(&mut self) -> bool {
        self.current_fingerprints().await != self.fingerprints
    }

    /// [`Scanner::take_renamed`], reported; `false` if they could not be taken that way.
    async fn report_renamed<F>(&mut self, paths: &[PathBuf], on_change: &mut F) -> bool
    where
        F: FnMut(Vec<FileChange>),
    {
        if paths.is_empty() {
            return true;
        }
        match self.take_renamed(paths).await {
            Some(changes) => {
                if !changes.is_empty() {
                    on_change(changes);
                }
                true
            }
            None => false,
        }
    }

    /// Reads files just renamed over watched names, once each: a rename replaces a file whole, so
    /// there is nothing to wait for. `None` if one is no longer a readable file (renamed away or
    /// replaced again in between): then the caller settles the directory as for any change.
    async fn take_renamed(&mut self, paths: &[PathBuf]) -> Option<Vec<FileChange>> {
        let mut changes = Vec::new();
        for path in paths {
            let meta = tokio::fs::metadata(path).await.ok()?;
            if !meta.is_file() {
                return None;
            }
            let Read::Content(content) = read(path).await else {
                return None;
            };
            // The fingerprint from before the read: if the file was replaced again since, the next
            // poll sees a difference even if notify's event for it was lost.
            if let Some(fingerprints) = &mut self.fingerprints {
                fingerprints.insert(path.clone(), (meta.modified().ok(), meta.len()));
            }
            if self.reported.get(path).and_then(|c| c.as_deref()) != Some(content.as_slice()) {
                self.reported.insert(path.clone(), Some(content.clone()));
                changes.push(FileChange {
                    path: path.clone(),
                    content: Some(content),
                });
            }
        }
        Some(changes)
    }

    /// Reads every candidate twice and returns the stable ones that changed, or `None` if some file
    /// was still changing (or vanished mid-scan): then nothing counts and the caller scans again
    /// shortly.
    async fn scan(&mut self) -> Option<Vec<FileChange>> {
        let Some(fingerprints) = self.current_fingerprints().await else {
            // Nothing is known about the files: the last report stands.
            self.fingerprints = None;
            return Some(Vec::new());
        };
        let mut candidates: Vec<PathBuf> = fingerprints.keys().cloned().collect();
        for (path, content) in &self.reported {
            if content.is_some() && !fingerprints.contains_key(path) {
                candidates.push(path.clone());
            }
        }
        let mut first = Vec::with_capacity(candidates.len());
        for path in &candidates {
            first.push(read(path).await);
        }
        tokio::time::sleep(STABILITY_RECHECK).await;

        let mut settled = Vec::with_capacity(candidates.len());
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
                    return None;
                }
            };
            settled.push((path, content));
        }
        let mut changes = Vec::new();
        for (path, content) in settled {
            let known = self.reported.get(&path);
            if known != Some(&content) && !(known.is_none() && content.is_none()) {
                self.reported.insert(path.clone(), content.clone());
                changes.push(FileChange { path, content });
            }
        }
        // Remember the fingerprints seen before reading; a write during the scan shows up on the next
        // poll (or notify event) as a difference.
        self.fingerprints = Some(fingerprints);
        Some(changes)
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
            // Settle: the files watched together (a certificate and its key) are renamed one by one.
            watch_stable_files(
                dir.clone(),
                move |name| names.iter().any(|n| n == name),
                Renames::Settle,
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
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::time::{Duration, SystemTime};

    /// Under paused time, how long a test waits to show that nothing was sent: the watcher's poll has
    /// looked (more than once) by then, and the wait costs nothing in real time.
    pub(crate) const QUIET: Duration = Duration::from_secs(3);
    /// Under paused time, how long a test waits for a change to be reported: the poll alone sees it
    /// within [`super::POLL_INTERVAL`], plus the debounce and stability reads.
    pub(crate) const SOON: Duration = Duration::from_secs(10);

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

        /// Writes `content` to `name` (a path relative to the directory; missing parent directories
        /// are created) with a modification time no other write in this process had.
        ///
        /// Under paused time the tests write files microseconds apart in real time, so two writes of
        /// the same length can share an mtime and the watcher's poll, which compares (mtime, length),
        /// would not see the second; between real writes a poll interval apart the mtimes differ.
        pub(crate) fn write(&self, name: &str, content: impl AsRef<[u8]>) {
            let path = self.0.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("create parent directory");
            }
            std::fs::write(&path, content).expect("write file");
            touch(&path);
        }

        /// Writes a temporary file and renames it over `name`, as editors do (with a fresh mtime,
        /// as [`TempDir::write`]).
        pub(crate) fn replace(&self, name: &str, content: &str) {
            let tmp = self.0.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, content).expect("write temp file");
            touch(&tmp);
            std::fs::rename(&tmp, self.0.join(name)).expect("rename over");
        }
    }

    /// Sets the modification time to now plus a per-process counter of milliseconds: later than any
    /// earlier call's.
    fn touch(path: &Path) {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let mtime = SystemTime::now() + Duration::from_millis(NEXT.fetch_add(1, Ordering::Relaxed));
        std::fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(mtime))
            .expect("set mtime");
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests;
