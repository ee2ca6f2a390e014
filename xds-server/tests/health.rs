//! The standard gRPC health service on the xDS port, and `/readyz` on the metrics port: not ready until
//! the sources have a complete view (`/healthz` answers as soon as the process does).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// A port nothing listens on now (the server under test binds it next).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the server; returns it, its xDS port and its metrics port.
fn start(args: &[&str]) -> (Server, u16, u16) {
    let port = free_port();
    let metrics = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_xds-server"))
        .args(args)
        .args(["--xds-addr", &format!("127.0.0.1:{port}")])
        // Parallel tests: never the default admin and metrics ports.
        .args(["--admin-addr", "127.0.0.1:0"])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start xds-server");
    (Server(child), port, metrics)
}

/// The HTTP status of `GET path` on the metrics port, once it answers.
fn http_status(port: u16, path: &str) -> u16 {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut out = String::new();
            if s.write_all(req.as_bytes()).is_ok() && s.read_to_string(&mut out).is_ok() {
                if let Some(code) = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()) {
                    return code;
                }
            }
        }
        assert!(Instant::now() < deadline, "metrics port never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn status(port: u16) -> Option<ServingStatus> {
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let mut client = HealthClient::new(channel);
    let resp = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(resp.into_inner().status).ok()
}

async fn wait_status(port: u16) -> ServingStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = status(port).await {
            return s;
        }
        assert!(Instant::now() < deadline, "health service never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn serving_once_the_endpoints_file_is_loaded() {
    let dir = std::env::temp_dir().join(format!("xds-health-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("endpoints.yaml");
    std::fs::write(&file, "services: []\n").unwrap();
    let (_server, port, metrics) = start(&["--endpoints", file.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while wait_status(port).await != ServingStatus::Serving {
        assert!(Instant::now() < deadline, "never became SERVING");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(http_status(metrics, "/readyz"), 200);
    assert_eq!(http_status(metrics, "/healthz"), 200);
}

#[tokio::test]
async fn not_serving_while_kubernetes_is_unreachable() {
    let dir = std::env::temp_dir().join(format!("xds-health-kube-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    // Nothing listens there: the initial lists never complete.
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: 'http://127.0.0.1:{}'}}\n\
             users:\n- name: u\n  user: {{}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\n\
             current-context: x\n",
            free_port()
        ),
    )
    .unwrap();
    let (_server, port, metrics) = start(&[
        "--source",
        "kubernetes",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ]);
    assert_eq!(wait_status(port).await, ServingStatus::NotServing);
    assert_eq!(
        http_status(metrics, "/healthz"),
        200,
        "alive while not ready"
    );
    assert_eq!(http_status(metrics, "/readyz"), 503);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(wait_status(port).await, ServingStatus::NotServing);
    assert_eq!(http_status(metrics, "/readyz"), 503);
}

/// A source that dies takes the process down with it, loudly: health NOT_SERVING first, then a log
/// line naming the task and its cause, then a non-zero exit (Kubernetes restarts the pod; Envoys keep
/// their last configuration meanwhile). The fault is injected in debug builds through the
/// supervisor (`XDS_FAIL_TASK`), into the endpoints file's watcher.
#[tokio::test]
async fn a_source_that_dies_stops_the_process_with_its_cause() {
    use std::io::Read;
    let dir = std::env::temp_dir().join(format!("xds-health-dies-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("endpoints.yaml");
    std::fs::write(&file, "services: []\n").unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_xds-server"))
        .args(["--endpoints", file.to_str().unwrap()])
        .args(["--xds-addr", &format!("127.0.0.1:{port}")])
        .args([
            "--admin-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .env("XDS_FAIL_TASK", format!("file watch {}", dir.display()))
        .env("XDS_FAIL_TASK_AFTER", "2s")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start xds-server");
    // It was serving before the fault.
    let deadline = Instant::now() + Duration::from_secs(20);
    while wait_status(port).await != ServingStatus::Serving {
        assert!(Instant::now() < deadline, "never became SERVING");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server kept running with a dead source");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!exit.success(), "exited with {exit}");
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        log.contains(&format!(
            "background task `file watch {}` panicked: fault injected",
            dir.display()
        )),
        "the cause is not in the log:\n{log}"
    );
    // stderr is a pipe here, as in a container: plain text, no colour codes.
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape codes in a log that is not a terminal:\n{log}"
    );
}
