use super::testutil::TempDir;
use super::*;
use std::io::Write;

type Batches = mpsc::UnboundedReceiver<Vec<FileChange>>;

fn start(dir: &TempDir, use_notify: bool, poll: Duration) -> (WatchHandle, Batches) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = watch_with(
        dir.path().to_path_buf(),
        |name: &str| name.ends_with(".yaml") && !name.starts_with('.'),
        move |batch| {
            let _ = tx.send(batch);
        },
        use_notify,
        poll,
    )
    .expect("start watch");
    (handle, rx)
}

async fn next(rx: &mut Batches, within: Duration) -> Vec<(String, Option<String>)> {
    let batch = tokio::time::timeout(within, rx.recv())
        .await
        .expect("no change reported in time")
        .expect("watch ended");
    batch
        .into_iter()
        .map(|c| {
            (
                c.path.file_name().unwrap().to_string_lossy().into_owned(),
                c.content.map(|b| String::from_utf8(b).unwrap()),
            )
        })
        .collect()
}

async fn nothing(rx: &mut Batches, for_: Duration) {
    if let Ok(batch) = tokio::time::timeout(for_, rx.recv()).await {
        panic!("unexpected change: {batch:?}");
    }
}

fn some(name: &str, content: &str) -> (String, Option<String>) {
    (name.to_string(), Some(content.to_string()))
}

#[tokio::test]
async fn reports_initial_files_then_edits_renames_and_deletions() {
    let dir = TempDir::new("watch-basic");
    std::fs::write(dir.join("a.yaml"), "a1").unwrap();
    std::fs::write(dir.join("ignored.txt"), "x").unwrap();
    let (_handle, mut rx) = start(&dir, true, POLL_INTERVAL);
    assert_eq!(
        next(&mut rx, Duration::from_secs(1)).await,
        vec![some("a.yaml", "a1")]
    );

    let t0 = std::time::Instant::now();
    std::fs::write(dir.join("a.yaml"), "a2").unwrap();
    assert_eq!(
        next(&mut rx, Duration::from_secs(1)).await,
        vec![some("a.yaml", "a2")]
    );
    assert!(
        t0.elapsed() < Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );

    dir.replace("a.yaml", "a3");
    assert_eq!(
        next(&mut rx, Duration::from_secs(1)).await,
        vec![some("a.yaml", "a3")]
    );

    // Same bytes again, and files the filter rejects: nothing to report.
    std::fs::write(dir.join("a.yaml"), "a3").unwrap();
    std::fs::write(dir.join("ignored.txt"), "y").unwrap();
    nothing(&mut rx, Duration::from_millis(400)).await;

    std::fs::remove_file(dir.join("a.yaml")).unwrap();
    assert_eq!(
        next(&mut rx, Duration::from_secs(1)).await,
        vec![("a.yaml".to_string(), None)]
    );
    std::fs::write(dir.join("b.yaml"), "b1").unwrap();
    assert_eq!(
        next(&mut rx, Duration::from_secs(1)).await,
        vec![some("b.yaml", "b1")]
    );
}

#[tokio::test]
async fn a_file_being_written_is_reported_once_complete() {
    let dir = TempDir::new("watch-slow-write");
    let (_handle, mut rx) = start(&dir, true, POLL_INTERVAL);
    let path = dir.join("slow.yaml");
    let writer = std::thread::spawn(move || {
        let mut file = std::fs::File::create(path).unwrap();
        for i in 0..8 {
            write!(file, "part{i};").unwrap();
            file.flush().unwrap();
            std::thread::sleep(Duration::from_millis(30));
        }
    });
    let batch = next(&mut rx, Duration::from_secs(3)).await;
    writer.join().unwrap();
    let full: String = (0..8).map(|i| format!("part{i};")).collect();
    assert_eq!(batch, vec![some("slow.yaml", &full)]);
    nothing(&mut rx, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn polling_notices_changes_without_notify() {
    let dir = TempDir::new("watch-poll");
    std::fs::write(dir.join("a.yaml"), "1").unwrap();
    let (_handle, mut rx) = start(&dir, false, Duration::from_millis(200));
    assert_eq!(
        next(&mut rx, Duration::from_secs(1)).await,
        vec![some("a.yaml", "1")]
    );
    std::fs::write(dir.join("a.yaml"), "22").unwrap();
    assert_eq!(
        next(&mut rx, Duration::from_secs(2)).await,
        vec![some("a.yaml", "22")]
    );
}

#[tokio::test]
async fn dropping_the_handle_stops_reporting() {
    let dir = TempDir::new("watch-drop");
    let (handle, mut rx) = start(&dir, true, POLL_INTERVAL);
    drop(handle);
    std::fs::write(dir.join("a.yaml"), "1").unwrap();
    let got = tokio::time::timeout(Duration::from_millis(400), rx.recv()).await;
    assert!(matches!(got, Ok(None) | Err(_)), "{got:?}");
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
    let err = watch_stable_files(dir.path().to_path_buf(), |_| true, |_| {}).unwrap_err();
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}
