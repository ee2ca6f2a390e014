//! Most tests run on tokio's paused time with notify off: the watcher is driven by its poll alone, so
//! every wait is virtual (instant in real time) and what each scan sees is decided by the test, not by
//! the scheduler. Files are written with [`TempDir::write`], which gives every write its own mtime so
//! the poll's (mtime, length) comparison sees it. The test of notify itself runs on real time: notify's
//! events come from an OS thread, which tokio's paused clock does not wait for.

use super::testutil::{TempDir, QUIET, SOON};
use super::*;
use std::io::Write;

type Batches = mpsc::UnboundedReceiver<Vec<FileChange>>;

/// Longer than any test: with this poll interval only notify can report a change.
const NEVER: Duration = Duration::from_secs(3600);

/// The files of `dir` ending in `.yaml` (not hidden).
fn yaml_files(dir: &Path) -> Scope {
    Scope::new(dir.to_path_buf(), false, |p: &Path| {
        p.to_str()
            .is_some_and(|n| n.ends_with(".yaml") && !n.starts_with('.'))
    })
}

/// The `.crt` files of `dir` and of its subdirectories.
fn crt_tree(dir: &Path) -> Scope {
    Scope::new(dir.to_path_buf(), true, |p: &Path| {
        p.extension().is_some_and(|e| e == "crt")
    })
}

struct Watched {
    dir: PathBuf,
    rx: Batches,
    handle: WatchHandle,
}

impl Watched {
    fn start(scope: Scope, use_notify: bool, poll: Duration) -> Self {
        let dir = scope.dir.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = watch_with(
            scope,
            move |batch| {
                let _ = tx.send(batch);
            },
            use_notify,
            poll,
        )
        .expect("start watch");
        Self { dir, rx, handle }
    }

    /// The next batch as (path relative to the watched directory, content).
    async fn next_within(&mut self, within: Duration) -> Vec<(String, Option<String>)> {
        let batch = tokio::time::timeout(within, self.rx.recv())
            .await
            .expect("no change reported in time")
            .expect("watch ended");
        batch
            .into_iter()
            .map(|c| {
                (
                    c.path
                        .strip_prefix(&self.dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                    c.content.map(|b| String::from_utf8(b).unwrap()),
                )
            })
            .collect()
    }

    async fn next(&mut self) -> Vec<(String, Option<String>)> {
        self.next_within(SOON).await
    }

    async fn nothing(&mut self) {
        if let Ok(batch) = tokio::time::timeout(QUIET, self.rx.recv()).await {
            panic!("unexpected change: {batch:?}");
        }
    }
}

fn some(name: &str, content: &str) -> (String, Option<String>) {
    (name.to_string(), Some(content.to_string()))
}

fn gone(name: &str) -> (String, Option<String>) {
    (name.to_string(), None)
}

/// Writes `name` in eight parts 35 ms apart, so that any two reads STABILITY_RECHECK apart during the
/// writing differ; returns the whole content.
async fn write_slowly(dir: &TempDir, name: &str) -> String {
    let mut file = std::fs::File::create(dir.join(name)).unwrap();
    for i in 0..8 {
        write!(file, "part{i};").unwrap();
        file.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(35)).await;
    }
    (0..8).map(|i| format!("part{i};")).collect()
}

#[tokio::test(start_paused = true)]
async fn reports_initial_files_then_edits_renames_and_deletions() {
    let dir = TempDir::new("watch-basic");
    dir.write("a.yaml", "a1");
    dir.write("ignored.txt", "x");
    let mut w = Watched::start(yaml_files(dir.path()), false, POLL_INTERVAL);
    assert_eq!(w.next().await, vec![some("a.yaml", "a1")]);

    // Without notify, the poll sees a change within one interval and reports it once stable.
    let t0 = Instant::now();
    dir.write("a.yaml", "a2");
    assert_eq!(w.next().await, vec![some("a.yaml", "a2")]);
    assert!(
        t0.elapsed() <= POLL_INTERVAL + STABILITY_RECHECK,
        "{:?}",
        t0.elapsed()
    );

    dir.replace("a.yaml", "a3");
    assert_eq!(w.next().await, vec![some("a.yaml", "a3")]);

    // Same bytes again, and files the filter rejects: nothing to report.
    dir.write("a.yaml", "a3");
    dir.write("ignored.txt", "y");
    w.nothing().await;

    std::fs::remove_file(dir.join("a.yaml")).unwrap();
    assert_eq!(w.next().await, vec![gone("a.yaml")]);
    dir.write("b.yaml", "b1");
    assert_eq!(w.next().await, vec![some("b.yaml", "b1")]);
}

#[tokio::test(start_paused = true)]
async fn a_file_being_written_is_reported_once_complete() {
    let dir = TempDir::new("watch-slow-write");
    let mut w = Watched::start(yaml_files(dir.path()), false, Duration::from_millis(200));
    let full = write_slowly(&dir, "slow.yaml").await;
    assert_eq!(w.next().await, vec![some("slow.yaml", &full)]);
    w.nothing().await;
}

#[tokio::test(start_paused = true)]
async fn a_batch_waits_until_every_file_has_settled() {
    let dir = TempDir::new("watch-batch");
    dir.write("a.yaml", "a1");
    dir.write("b.yaml", "b1");
    let mut w = Watched::start(yaml_files(dir.path()), false, Duration::from_millis(200));
    assert_eq!(
        w.next().await,
        vec![some("a.yaml", "a1"), some("b.yaml", "b1")]
    );
    // a.yaml is rewritten at once; b.yaml in parts, still being written when the next poll's scan
    // reads both: a.yaml's new content waits for b.yaml's, and both come in one batch.
    dir.write("a.yaml", "a2");
    let full = write_slowly(&dir, "b.yaml").await;
    assert_eq!(
        w.next().await,
        vec![some("a.yaml", "a2"), some("b.yaml", &full)]
    );
    w.nothing().await;
}

#[tokio::test(start_paused = true)]
async fn a_tree_watch_covers_files_one_level_down() {
    let dir = TempDir::new("watch-tree");
    dir.write("ca.crt", "ca1");
    dir.write("web/tls.crt", "web1");
    dir.write("web/notes.txt", "filtered out");
    dir.write("web/deeper/tls.crt", "two levels down");
    dir.write("..data/tls.crt", "in a hidden subdirectory");
    let mut w = Watched::start(crt_tree(dir.path()), false, POLL_INTERVAL);
    assert_eq!(
        w.next().await,
        vec![some("ca.crt", "ca1"), some("web/tls.crt", "web1")]
    );

    dir.write("db/tls.crt", "db1");
    dir.write("web/tls.crt", "web22");
    assert_eq!(
        w.next().await,
        vec![some("db/tls.crt", "db1"), some("web/tls.crt", "web22")]
    );
    dir.write("web/deeper/tls.crt", "still not watched");
    dir.write("web/notes.txt", "still filtered out");
    w.nothing().await;

    std::fs::remove_dir_all(dir.join("web")).unwrap();
    assert_eq!(w.next().await, vec![gone("web/tls.crt")]);
}

#[tokio::test(start_paused = true)]
async fn a_directory_that_cannot_be_listed_reports_nothing() {
    let dir = TempDir::new("watch-dir-gone");
    dir.write("conf/a.yaml", "a1");
    let mut w = Watched::start(yaml_files(&dir.join("conf")), false, POLL_INTERVAL);
    assert_eq!(w.next().await, vec![some("a.yaml", "a1")]);
    // The directory goes away (an unmounted volume, say): its files are not taken for deleted.
    std::fs::remove_dir_all(dir.join("conf")).unwrap();
    w.nothing().await;
    // Back: what differs from the last report is reported.
    dir.write("conf/a.yaml", "a2");
    dir.write("conf/b.yaml", "b1");
    assert_eq!(
        w.next().await,
        vec![some("a.yaml", "a2"), some("b.yaml", "b1")]
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_handle_stops_reporting() {
    let dir = TempDir::new("watch-drop");
    let mut w = Watched::start(yaml_files(dir.path()), false, POLL_INTERVAL);
    drop(w.handle);
    dir.write("a.yaml", "1");
    let got = tokio::time::timeout(QUIET, w.rx.recv()).await;
    assert!(matches!(got, Ok(None) | Err(_)), "{got:?}");
}

#[tokio::test(start_paused = true)]
async fn debounce_waits_for_a_quiet_period_but_no_longer_than_the_cap() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Timers fire on whole milliseconds: allow a few of rounding.
    let assert_took = |t0: Instant, expected: Duration| {
        let took = t0.elapsed();
        assert!(
            took >= expected && took < expected + Duration::from_millis(10),
            "took {took:?}, expected {expected:?}"
        );
    };
    let pokes = |n: usize| {
        let tx = tx.clone();
        tokio::spawn(async move {
            for _ in 0..n {
                tokio::time::sleep(Duration::from_millis(60)).await;
                let _ = tx.send(Poke::Changed);
            }
        })
    };

    // No event: one quiet period.
    let t0 = Instant::now();
    debounce(&mut rx, t0 + MAX_BATCH_DELAY).await;
    assert_took(t0, DEBOUNCE);

    // Three events 60 ms apart: a quiet period after the last.
    let t0 = Instant::now();
    pokes(3);
    debounce(&mut rx, t0 + MAX_BATCH_DELAY).await;
    assert_took(t0, 3 * Duration::from_millis(60) + DEBOUNCE);

    // Events that never let up: the cap.
    let t0 = Instant::now();
    let endless = pokes(usize::MAX);
    debounce(&mut rx, t0 + MAX_BATCH_DELAY).await;
    assert_took(t0, MAX_BATCH_DELAY);
    endless.abort();
}

#[test]
fn notify_events_that_matter() {
    let event = |kind: EventKind, path: &str| notify::Event::new(kind).add_path(path.into());
    let modify = EventKind::Modify(notify::event::ModifyKind::Any);
    let create = EventKind::Create(notify::event::CreateKind::Any);
    let tree = crt_tree(Path::new("/d"));
    assert!(tree.is_relevant(&event(modify, "/d/web/tls.crt")));
    assert!(tree.is_relevant(&event(
        EventKind::Access(AccessKind::Close(AccessMode::Write)),
        "/d/ca.crt"
    )));
    // Our own reads.
    assert!(!tree.is_relevant(&event(
        EventKind::Access(AccessKind::Open(AccessMode::Any)),
        "/d/ca.crt"
    )));
    assert!(!tree.is_relevant(&event(modify, "/d/web/notes.txt")));
    assert!(!tree.is_relevant(&event(create, "/d/.ca.crt.tmp")));
    // A subdirectory as a whole (renamed in, removed), and a Kubernetes volume's symlink swap.
    assert!(tree.is_relevant(&event(create, "/d/db")));
    assert!(tree.is_relevant(&event(create, "/d/web/..data_tmp")));

    let flat = yaml_files(Path::new("/d"));
    assert!(flat.is_relevant(&event(modify, "/d/a.yaml")));
    assert!(flat.is_relevant(&event(create, "/d/..data")));
    assert!(!flat.is_relevant(&event(create, "/d/db")));
}

#[test]
fn a_rename_over_a_watched_name_is_taken_at_once_only_where_the_watch_says_so() {
    use notify::event::{ModifyKind, RenameMode};
    let renamed = |mode, paths: &[&str]| {
        paths.iter().fold(
            notify::Event::new(EventKind::Modify(ModifyKind::Name(mode))),
            |e, p| e.add_path(PathBuf::from(p)),
        )
    };
    let at_once = yaml_files(Path::new("/d")).renames(Renames::AtOnce);
    let over = |p: &str| Poke::RenamedOver(PathBuf::from(p));
    assert_eq!(
        at_once.poke(&renamed(RenameMode::To, &["/d/a.yaml"])),
        over("/d/a.yaml")
    );
    assert_eq!(
        at_once.poke(&renamed(RenameMode::Both, &["/d/.a.yaml.tmp", "/d/a.yaml"])),
        over("/d/a.yaml")
    );
    // The watched file renamed away, a write in place, a volume's symlink swap: settle.
    assert_eq!(
        at_once.poke(&renamed(RenameMode::From, &["/d/a.yaml"])),
        Poke::Changed
    );
    assert_eq!(
        at_once.poke(&renamed(RenameMode::Both, &["/d/a.yaml", "/d/a.yaml.bak"])),
        Poke::Changed
    );
    let write = notify::Event::new(EventKind::Access(AccessKind::Close(AccessMode::Write)))
        .add_path(PathBuf::from("/d/a.yaml"));
    assert_eq!(at_once.poke(&write), Poke::Changed);
    assert_eq!(
        at_once.poke(&renamed(RenameMode::To, &["/d/..data"])),
        Poke::Changed
    );
    // Watches that settle renames, and trees (a certificate and its key arrive one by one).
    let settle = yaml_files(Path::new("/d"));
    assert_eq!(
        settle.poke(&renamed(RenameMode::To, &["/d/a.yaml"])),
        Poke::Changed
    );
    let tree = crt_tree(Path::new("/d")).renames(Renames::AtOnce);
    assert_eq!(
        tree.poke(&renamed(RenameMode::To, &["/d/web/tls.crt"])),
        Poke::Changed
    );
}

#[test]
fn queued_events_are_sorted_into_renames_and_other_changes() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let over = |p: &str| Poke::RenamedOver(PathBuf::from(p));
    tx.send(over("/d/b.yaml")).unwrap();
    tx.send(over("/d/a.yaml")).unwrap();
    let pokes = Pokes::drain(over("/d/a.yaml"), &mut rx);
    assert_eq!(
        pokes.renamed,
        [PathBuf::from("/d/a.yaml"), PathBuf::from("/d/b.yaml")]
    );
    assert!(!pokes.changed);
    tx.send(Poke::Changed).unwrap();
    let pokes = Pokes::drain(over("/d/a.yaml"), &mut rx);
    assert!(pokes.changed);
    // Everything queued was consumed.
    assert!(rx.try_recv().is_err());
}

// Real time, notify on, no poll. A rename is taken at once: a file renamed over the watched name
// while another one is half-written in place would, if the watch waited for the directory to
// settle, not be reported until the writing stopped.
#[tokio::test]
async fn a_renamed_file_is_reported_without_waiting_for_other_writes_to_settle() {
    let within = Duration::from_secs(5);
    let dir = TempDir::new("watch-rename-at-once");
    dir.write("a.yaml", "a1");
    dir.write("b.yaml", "b1");
    let mut w = Watched::start(yaml_files(dir.path()).renames(Renames::AtOnce), true, NEVER);
    assert_eq!(
        w.next_within(within).await,
        vec![some("a.yaml", "a1"), some("b.yaml", "b1")]
    );

    // b.yaml is being written in place for 4 s (a write every 20 ms never lets the directory settle
    // until then); a.yaml is replaced by a rename in the middle of it.
    let writer = {
        let path = dir.join("b.yaml");
        std::thread::spawn(move || {
            let mut file = std::fs::File::create(path).unwrap();
            for i in 0..200 {
                write!(file, "{i};").unwrap();
                file.flush().unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = std::time::Instant::now();
    dir.replace("a.yaml", "a2");
    assert_eq!(w.next_within(within).await, vec![some("a.yaml", "a2")]);
    println!("renamed file reported after {:?}", t0.elapsed());
    writer.join().unwrap();
    // Then the in-place write, once it settled.
    let batch = w.next_within(within).await;
    assert_eq!(batch.len(), 1, "{batch:?}");
    assert_eq!(batch[0].0, "b.yaml");
    assert!(
        batch[0].1.as_deref().unwrap().ends_with("199;"),
        "{batch:?}"
    );
}

// Real time: notify's events come from an OS thread, and under paused time tokio would jump its clock
// past them. The poll is off (an hour), so everything reported here came through notify.
#[tokio::test]
async fn notify_reports_changes_without_waiting_for_the_poll() {
    let within = Duration::from_secs(5);
    let dir = TempDir::new("watch-notify");
    dir.write("a.yaml", "a1");
    let mut flat = Watched::start(yaml_files(dir.path()), true, NEVER);
    assert_eq!(flat.next_within(within).await, vec![some("a.yaml", "a1")]);
    std::fs::write(dir.join("a.yaml"), "a2").unwrap();
    assert_eq!(flat.next_within(within).await, vec![some("a.yaml", "a2")]);
    dir.replace("a.yaml", "a3");
    assert_eq!(flat.next_within(within).await, vec![some("a.yaml", "a3")]);

    let dir = TempDir::new("watch-notify-tree");
    dir.write("ca.crt", "ca1");
    let mut tree = Watched::start(crt_tree(dir.path()), true, NEVER);
    assert_eq!(tree.next_within(within).await, vec![some("ca.crt", "ca1")]);
    // In a subdirectory created after the watch started.
    dir.write("web/tls.crt", "web1");
    assert_eq!(
        tree.next_within(within).await,
        vec![some("web/tls.crt", "web1")]
    );
    // A subdirectory renamed in whole.
    let staging = TempDir::new("watch-notify-staging");
    staging.write("db/tls.crt", "db1");
    std::fs::rename(staging.join("db"), dir.join("db")).unwrap();
    assert_eq!(
        tree.next_within(within).await,
        vec![some("db/tls.crt", "db1")]
    );
}

#[test]
fn split_file_path_handles_bare_names() {
    let (dir, name) = split_file_path(Path::new("endpoints.yaml")).unwrap();
    assert_eq!((dir, name.as_str()), (PathBuf::from("."), "endpoints.yaml"));
    let (dir, name) = split_file_path(Path::new("/etc/x/e.yaml")).unwrap();
    assert_eq!((dir, name.as_str()), (PathBuf::from("/etc/x"), "e.yaml"));
    assert!(split_file_path(Path::new("/")).is_err());
}

#[test]
fn watching_needs_a_runtime() {
    let dir = TempDir::new("watch-no-rt");
    let err = watch_stable_files(dir.path().to_path_buf(), |_| true, Renames::Settle, |_| {})
        .unwrap_err();
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}
