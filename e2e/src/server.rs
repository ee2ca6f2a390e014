//! `xds-server` as a child process on 127.0.0.1 and a free port, its stdout and stderr appended to a
//! log file that tests can read (for example to find NACK lines).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use crate::tmp::TempDir;

/// How long a starting server may take to accept on its xDS port.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// xDS port → log file of every [`XdsServer`] alive in this process, so an Envoy handle can check in
/// its server's log how it connected ([`crate::envoy::Envoy::verify_protocol`]).
static LOGS: Mutex<BTreeMap<u16, PathBuf>> = Mutex::new(BTreeMap::new());

/// The log file of the [`XdsServer`] of this process listening on `port`, if there is one.
pub fn log_path_for(port: u16) -> Option<PathBuf> {
    LOGS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&port)
        .cloned()
}

pub struct XdsServer {
    child: Option<Child>,
    /// Counts this server for tests that run [`alone`](crate::alone::alone).
    _live: crate::alone::Live,
    port: u16,
    /// `--admin-addr` port (admin gRPC API, CSDS), free like the others.
    admin_port: u16,
    /// `--metrics-addr` port (Prometheus `/metrics`, `/healthz`, `/readyz`): a free one per server, so
    /// parallel tests never collide on the default.
    metrics_port: u16,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    log_path: PathBuf,
    _dir: TempDir,
}

/// What to run the server with; `--xds-addr`, `--admin-addr`, `--metrics-addr` and `--log-format`
/// are added by the harness.
#[derive(Debug, Clone, Default)]
pub struct ServerArgs {
    /// `--endpoints` (the file source); unused when `kubeconfig` is set.
    pub endpoints: PathBuf,
    /// `--source kubernetes --kubeconfig PATH` instead of the endpoints file.
    pub kubeconfig: Option<PathBuf>,
    /// `--cluster SPEC` for each (several Kubernetes clusters) instead of either.
    pub clusters: Vec<String>,
    pub policies: Option<PathBuf>,
    /// Default listener port handed out to Envoys that don't override it (a free port if `None`).
    pub listener_port: Option<u16>,
    pub extra: Vec<String>,
    /// Environment variables for the server process (flags' `XDS_*` variables, `POD_NAME`, ...).
    pub env: Vec<(String, String)>,
}

impl ServerArgs {
    pub fn new(endpoints: impl Into<PathBuf>) -> Self {
        ServerArgs {
            endpoints: endpoints.into(),
            ..Default::default()
        }
    }

    /// The Kubernetes source, through a kubeconfig (e.g. one written by
    /// [`crate::apiserver::ApiServer::write_kubeconfig`]).
    pub fn kubernetes(kubeconfig: impl Into<PathBuf>) -> Self {
        ServerArgs {
            kubeconfig: Some(kubeconfig.into()),
            ..Default::default()
        }
    }

    /// Several Kubernetes clusters: one `--cluster NAME=KUBECONFIG[,...]` each.
    pub fn clusters(specs: impl IntoIterator<Item = String>) -> Self {
        ServerArgs {
            clusters: specs.into_iter().collect(),
            ..Default::default()
        }
    }

    pub fn policies(mut self, path: impl Into<PathBuf>) -> Self {
        self.policies = Some(path.into());
        self
    }
}

impl XdsServer {
    /// Starts the server and waits until its xDS port accepts connections. Panics (with the server's
    /// log) if it exits or does not listen within [`START_TIMEOUT`].
    pub fn start(args: ServerArgs) -> XdsServer {
        let live = crate::alone::Live::new();
        let port = crate::ports::free_port();
        let admin_port = crate::ports::free_port();
        let metrics_port = crate::ports::free_port();
        let listener_port = args.listener_port.unwrap_or_else(crate::ports::free_port);
        let mut argv: Vec<OsString> = match &args.kubeconfig {
            _ if !args.clusters.is_empty() => args
                .clusters
                .iter()
                .flat_map(|c| ["--cluster".into(), c.into()])
                .collect(),
            Some(kubeconfig) => vec![
                "--source".into(),
                "kubernetes".into(),
                "--kubeconfig".into(),
                kubeconfig.clone().into(),
            ],
            None => vec!["--endpoints".into(), args.endpoints.clone().into()],
        };
        argv.extend::<[OsString; 10]>([
            "--xds-addr".into(),
            format!("127.0.0.1:{port}").into(),
            "--admin-addr".into(),
            format!("127.0.0.1:{admin_port}").into(),
            "--metrics-addr".into(),
            format!("127.0.0.1:{metrics_port}").into(),
            "--listener-port".into(),
            listener_port.to_string().into(),
            "--log-format".into(),
            "text".into(),
        ]);
        if let Some(p) = &args.policies {
            argv.push("--policies".into());
            argv.push(p.clone().into());
        }
        argv.extend(args.extra.iter().map(OsString::from));
        let dir = TempDir::new("server");
        let log_path = dir.join("xds-server.log");
        LOGS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(port, log_path.clone());
        let mut server = XdsServer {
            child: None,
            _live: live,
            port,
            admin_port,
            metrics_port,
            args: argv,
            env: args.env.clone(),
            log_path,
            _dir: dir,
        };
        server.restart();
        server
    }

    /// Runs the server with `args` (plus a free `--xds-addr`, and a free `--admin-addr` unless `args`
    /// has one) expecting it to exit by itself, e.g. on an invalid endpoints file. Returns its exit status (`None` if it was still
    /// running after `timeout` and had to be killed) and its log.
    pub fn run_expecting_exit(args: &[&str], timeout: Duration) -> (Option<ExitStatus>, String) {
        let dir = TempDir::new("server-exit");
        let log_path = dir.join("xds-server.log");
        let port = crate::ports::free_port();
        let admin_port = crate::ports::free_port();
        let mut cmd = command(&log_path);
        cmd.args(args)
            .args(["--xds-addr", &format!("127.0.0.1:{port}")])
            .args(["--metrics-addr", "127.0.0.1:0"]);
        if !args.contains(&"--admin-addr") {
            cmd.args(["--admin-addr", &format!("127.0.0.1:{admin_port}")]);
        }
        let mut child = cmd.spawn().expect("spawn xds-server");
        let status = crate::poll(timeout, Duration::from_millis(50), || {
            child.try_wait().ok().flatten()
        });
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        (status, log)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// The admin gRPC API (`xdsctl --admin-addr`, CSDS, health, reflection).
    pub fn admin_addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.admin_port).into()
    }

    /// Runs `xdsctl ARGS` against this server's admin API (`XDS_ADMIN_ADDR` from the environment
    /// ignored); panics with its stderr if it fails. Returns its standard output.
    pub fn xdsctl(&self, args: &[&str]) -> String {
        let admin = self.admin_addr().to_string();
        run_xdsctl(&[&["--admin-addr", &admin], args].concat())
            .unwrap_or_else(|error| panic!("xdsctl {args:?} failed: {error}"))
    }

    /// Runs `xdsctl ARGS` against this server's admin API over mutual TLS: trusting `ca`, presenting
    /// `client`. Its standard output, or its standard error if it fails (a refusal is what some tests
    /// are after).
    pub fn xdsctl_over_tls(
        &self,
        ca: &Path,
        client: &crate::pki::LeafFiles,
        args: &[&str],
    ) -> Result<String, String> {
        let admin = format!("https://{}", self.admin_addr());
        let (ca, cert, key) = (
            ca.display().to_string(),
            client.cert.display().to_string(),
            client.key.display().to_string(),
        );
        let tls = [
            "--admin-addr",
            &admin,
            "--ca",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
        ];
        run_xdsctl(&[&tls[..], args].concat())
    }

    /// `xdsctl ARGS -o json`, parsed.
    pub fn xdsctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let text = self.xdsctl(&all);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("xdsctl {args:?}: bad JSON: {e}\n{text}"))
    }

    /// Follows `xdsctl events ARGS` (e.g. `-o json`, `--node NODE`) as a child process. The events
    /// stream replays nothing: start it before what it should see.
    pub fn tail_events(&self, args: &[&str]) -> EventTail {
        let mut child = Command::new(crate::paths::xdsctl_bin())
            .args(["--admin-addr", &self.admin_addr().to_string(), "events"])
            .args(args)
            .env_remove("XDS_ADMIN_ADDR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn xdsctl events");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        EventTail { child, lines }
    }

    /// The Prometheus endpoint: `http://{metrics_addr}/metrics`, `/healthz`, `/readyz`.
    pub fn metrics_addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.metrics_port).into()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the server printed so far, over all its runs.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Log lines containing `needle` (case-insensitive).
    pub fn log_lines_with(&self, needle: &str) -> Vec<String> {
        let needle = needle.to_ascii_lowercase();
        self.log()
            .lines()
            .filter(|l| l.to_ascii_lowercase().contains(&needle))
            .map(str::to_string)
            .collect()
    }

    /// Waits until a log line contains `needle` (case-insensitive).
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        crate::poll(timeout, Duration::from_millis(50), || {
            (!self.log_lines_with(needle).is_empty()).then_some(())
        })
        .is_some()
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    /// Kills the server (SIGKILL: a crash, no goodbye to connected Envoys).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.note("killed by the e2e harness");
        }
    }

    /// Starts the server again with the same arguments on the same xDS port (no-op if running), and
    /// waits until it accepts connections.
    pub fn restart(&mut self) {
        if self.is_running() {
            return;
        }
        self.note("started by the e2e harness");
        let mut cmd = command(&self.log_path);
        cmd.args(&self.args).envs(self.env.iter().cloned());
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start {}: {e}", crate::paths::server_bin().display())
        });
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if crate::ports::is_listening(self.port) {
                return;
            }
            if !self.is_running() {
                panic!(
                    "xds-server exited before listening on {}; its log:\n{}",
                    self.addr(),
                    crate::tail(&self.log(), 60)
                );
            }
            if started.elapsed() > START_TIMEOUT {
                panic!(
                    "xds-server did not listen on {} within {START_TIMEOUT:?}; its log:\n{}",
                    self.addr(),
                    crate::tail(&self.log(), 60)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn note(&self, what: &str) {
        use std::io::Write;
        if let Ok(mut f) = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.log_path)
        {
            let _ = writeln!(f, "==== e2e: xds-server {what} ====");
        }
    }
}

fn command(log_path: &Path) -> Command {
    let log = OpenOptions::new()
        .append(true)
        .create(true)
        .open(log_path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", log_path.display()));
    let mut cmd = Command::new(crate::paths::server_bin());
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log file handle"))
        .stderr(log);
    // Plain text in the log file (no ANSI colours), so tests and people can grep it.
    cmd.env("NO_COLOR", "1");
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    cmd
}

impl Drop for XdsServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- xds-server log ({}), last lines ----\n{}\n---- end of xds-server log ----",
                self.log_path.display(),
                crate::tail(&self.log(), 80)
            );
        }
        self.kill();
        LOGS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.port);
    }
}

/// `xdsctl events` running as a child process ([`XdsServer::tail_events`]); killed when dropped.
pub struct EventTail {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl EventTail {
    /// The lines printed until one satisfies `until` (included). Panics with the lines read if none
    /// does within `timeout`.
    pub fn read_until(&self, timeout: Duration, until: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = until(&line);
                    out.push(line);
                    if done {
                        return out;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "xdsctl events: the awaited line never came within {timeout:?}; got:\n{}",
            out.join("\n")
        );
    }

    /// With `-o json`: the events printed so far and not read yet, each parsed; waits for none.
    pub fn take_json(&self) -> Vec<serde_json::Value> {
        self.lines
            .try_iter()
            .map(|line| {
                serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("xdsctl events: bad JSON line: {e}: {line}"))
            })
            .collect()
    }

    /// With `-o json`: the events read until one satisfies `until` (included), each parsed.
    pub fn read_json_until(
        &self,
        timeout: Duration,
        until: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        let parse = |line: &str| -> serde_json::Value {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("xdsctl events: bad JSON line: {e}: {line}"))
        };
        self.read_until(timeout, |line| until(&parse(line)))
            .iter()
            .map(|line| parse(line))
            .collect()
    }
}

impl Drop for EventTail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs xdsctl with `args` (`XDS_ADMIN_ADDR` from the environment ignored): its standard output, or
/// its exit status and standard error.
fn run_xdsctl(args: &[&str]) -> Result<String, String> {
    let out = Command::new(crate::paths::xdsctl_bin())
        .args(args)
        .env_remove("XDS_ADMIN_ADDR")
        .stdin(Stdio::null())
        .output()
        .expect("run xdsctl");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("utf-8 output"))
    } else {
        Err(format!(
            "({}) {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
