//! Proxyless gRPC clients: real gRPC client libraries that get their routes, clusters and endpoints
//! from `xds-server` themselves (target `xds:///AUTHORITY`), with no Envoy in between.
//!
//! Each [`GrpcLibrary`] has a small driver committed in `e2e/grpc-clients/` (`client.py` for grpcio,
//! `client.js` for grpc-js with grpc-js-xds), installed by `scripts/ensure-grpc-clients.sh`. The
//! harness writes the client's xDS bootstrap (node id, locality, this test's server), starts the
//! driver as a child process, and reads the one JSON line it prints per call in a thread. The driver
//! calls [`WHO`](crate::grpc_backend::WHO) at a fixed interval, one call at a time, each with a
//! deadline; a backend answers with its body (its zone), so the calls tally like Envoy's traffic
//! ([`crate::traffic::Tally`], [`crate::traffic::Switch`]).

use std::fmt;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use crate::tmp::TempDir;
use crate::topology::Zone;
use crate::traffic::{Switch, Tally};

/// A proxyless gRPC client library the tests drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcLibrary {
    /// Python `grpcio`, on gRPC C-core.
    Grpcio,
    /// Node `@grpc/grpc-js` with `@grpc/grpc-js-xds`.
    GrpcJs,
}

impl GrpcLibrary {
    pub fn name(self) -> &'static str {
        match self {
            GrpcLibrary::Grpcio => "grpcio",
            GrpcLibrary::GrpcJs => "grpc-js",
        }
    }

    /// The driver's command line, before its arguments. Panics (never skips) if the library is not
    /// installed.
    fn command(self) -> Command {
        let scripts = crate::paths::grpc_client_scripts();
        match self {
            GrpcLibrary::Grpcio => {
                let mut cmd = Command::new(crate::paths::grpc_python());
                cmd.arg(scripts.join("client.py"));
                cmd
            }
            GrpcLibrary::GrpcJs => {
                let modules = crate::paths::grpc_node_clients().join("node_modules");
                let mut cmd = Command::new("node");
                cmd.env("NODE_PATH", modules).arg(scripts.join("client.js"));
                cmd
            }
        }
    }
}

impl fmt::Display for GrpcLibrary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Calls every 20 ms: enough to see a failover to within a few calls, little CPU on a loaded machine.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(20);
/// A call that takes longer has failed (`DEADLINE_EXCEEDED`); backends answer in milliseconds.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(1);
/// A driver stops by itself after this long, should the harness never stop it.
const MAX_RUN: Duration = Duration::from_secs(900);
/// How long a line may take to come: the deadline, plus generous slack for a loaded machine.
const LINE_WAIT: Duration = Duration::from_secs(15);

/// Who the client is and what it dials.
#[derive(Debug, Clone)]
pub struct GrpcClientOptions {
    pub node_id: String,
    pub zone: Zone,
    /// Node metadata `namespace` (the namespace a bare `NAME:PORT` target is looked up in).
    pub namespace: Option<String>,
    /// The xDS server (`server_uri`).
    pub server: SocketAddr,
    /// What the client dials: `xds:///AUTHORITY`, e.g. `xds:///echo.demo:8080`.
    pub target: String,
    pub interval: Duration,
    pub deadline: Duration,
}

impl GrpcClientOptions {
    pub fn new(node_id: &str, zone: Zone, server: SocketAddr, authority: &str) -> Self {
        GrpcClientOptions {
            node_id: node_id.to_string(),
            zone,
            namespace: None,
            server,
            target: format!("xds:///{authority}"),
            interval: DEFAULT_INTERVAL,
            deadline: DEFAULT_DEADLINE,
        }
    }

    /// Dials `addr` directly, without xDS (the bootstrap is still written, and unused).
    pub fn direct(mut self, addr: SocketAddr) -> Self {
        self.target = addr.to_string();
        self
    }

    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_string());
        self
    }

    /// The bootstrap file's JSON (`GRPC_XDS_BOOTSTRAP`): plaintext to the server, SotW ADS (the only
    /// flavour gRPC clients speak), the locality grpc-js insists on.
    pub fn bootstrap(&self) -> Json {
        let mut metadata = serde_json::Map::new();
        if let Some(ns) = &self.namespace {
            metadata.insert("namespace".into(), json!(ns));
        }
        json!({
            "xds_servers": [{
                "server_uri": self.server.to_string(),
                "channel_creds": [{"type": "insecure"}],
                "server_features": [],
            }],
            "node": {
                "id": self.node_id,
                "cluster": "e2e-grpc",
                "locality": {"region": self.zone.region, "zone": self.zone.zone},
                "metadata": metadata,
            },
        })
    }
}

/// One call as the driver reported it.
#[derive(Debug, Clone)]
pub struct Call {
    /// When the harness read its line (the call had ended by then).
    pub at: Instant,
    /// `Ok(body)` (the answering backend's zone), or `Err("CODE: details")`.
    pub outcome: Result<String, String>,
    /// The answering backend's name (`x-backend`), for a successful call.
    pub backend: Option<String>,
}

/// A running driver of one [`GrpcLibrary`]; killed when dropped (its log's tail is printed if the
/// test is panicking).
pub struct GrpcClient {
    library: GrpcLibrary,
    node_id: String,
    target: String,
    child: Option<Child>,
    /// Counts this client for tests that run [`alone`](crate::alone::alone).
    _live: crate::alone::Live,
    calls: Receiver<Line>,
    /// Once this file exists the driver makes no more calls ([`GrpcClient::stop_calls`]).
    stop_file: PathBuf,
    log_path: PathBuf,
    _dir: TempDir,
}

/// What the driver printed: a call, or that it stopped calling.
enum Line {
    Call(Call),
    Stopped,
}

impl GrpcClient {
    /// Writes the bootstrap and starts the driver. Returns at once: the client resolves its target
    /// through xDS while calling (see [`GrpcClient::wait_served_by`]).
    pub fn start(library: GrpcLibrary, opts: GrpcClientOptions) -> GrpcClient {
        let live = crate::alone::Live::new();
        let dir = TempDir::new(&format!("grpc-{}-{}", library.name(), opts.node_id));
        let bootstrap_path = dir.join("bootstrap.json");
        std::fs::write(&bootstrap_path, opts.bootstrap().to_string()).expect("write bootstrap");
        let log_path = dir.join("client.log");
        let stop_file = dir.join("stop");
        let log = std::fs::File::create(&log_path).expect("create client log");
        let mut child = library
            .command()
            .args(["--target", &opts.target])
            .args(["--interval-ms", &opts.interval.as_millis().to_string()])
            .args(["--deadline-ms", &opts.deadline.as_millis().to_string()])
            .args(["--max-seconds", &MAX_RUN.as_secs().to_string()])
            .arg("--stop-file")
            .arg(&stop_file)
            .env("GRPC_XDS_BOOTSTRAP", &bootstrap_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {library} client driver: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, calls) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("grpc-{}-{}", library.name(), opts.node_id))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(parse_line(&line)).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn client reader thread");
        GrpcClient {
            library,
            node_id: opts.node_id,
            target: opts.target,
            child: Some(child),
            _live: live,
            calls,
            stop_file,
            log_path,
            _dir: dir,
        }
    }

    pub fn library(&self) -> GrpcLibrary {
        self.library
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// What it dials, e.g. `xds:///echo.demo:8080`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The driver's stderr (the library's own logging included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The next call, waiting up to `wait` for it. Panics if the driver is gone.
    pub fn next_call(&self, wait: Duration) -> Option<Call> {
        match self.calls.recv_timeout(wait) {
            Ok(Line::Call(call)) => Some(call),
            Ok(Line::Stopped) => panic!(
                "the {} client {} was told to stop calling, yet a call is awaited",
                self.library, self.node_id
            ),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => panic!(
                "the {} client {} exited; its log:\n{}",
                self.library,
                self.node_id,
                crate::tail(&self.log(), 40)
            ),
        }
    }

    /// Drops the calls reported so far, so what is read next happened after this point.
    pub fn skip_pending(&self) -> usize {
        self.calls.try_iter().count()
    }

    /// Every call from now on (none skipped) until `n` of them were answered by `body`, tallied;
    /// `None` if that did not happen within `within` (the tally so far is lost then: the test fails).
    pub fn tally_until_served(&self, body: &str, n: usize, within: Duration) -> Option<Tally> {
        let deadline = Instant::now() + within;
        let mut tally = Tally::default();
        while tally.count(body) < n {
            let left = deadline.checked_duration_since(Instant::now())?;
            if let Some(call) = self.next_call(left.min(LINE_WAIT)) {
                tally.record(&call.outcome);
            }
        }
        Some(tally)
    }

    /// Tells the driver to make no more calls (it stays up, its channel and the channel's xDS and
    /// load-report streams too) and returns the calls it reported until it stopped, none skipped:
    /// with what was read before, every call it ever made.
    pub fn stop_calls(&self) -> Tally {
        std::fs::write(&self.stop_file, b"").expect("write the stop file");
        let mut tally = Tally::default();
        loop {
            match self.calls.recv_timeout(LINE_WAIT) {
                Ok(Line::Call(call)) => tally.record(&call.outcome),
                Ok(Line::Stopped) => return tally,
                Err(_) => panic!(
                    "the {} client {} did not say it stopped calling within {LINE_WAIT:?} ({tally} \
                     so far); its log:\n{}",
                    self.library,
                    self.node_id,
                    crate::tail(&self.log(), 40)
                ),
            }
        }
    }

    /// The next `n` calls, tallied by answering zone. Panics if the driver stops reporting.
    pub fn tally(&self, n: usize) -> Tally {
        self.skip_pending();
        let mut tally = Tally::default();
        for _ in 0..n {
            let call = self.next_call(LINE_WAIT).unwrap_or_else(|| {
                panic!(
                    "the {} client {} reported no call for {LINE_WAIT:?} ({tally} so far)",
                    self.library, self.node_id
                )
            });
            tally.record(&call.outcome);
        }
        tally
    }

    /// Waits (up to `within`) for a call answered by `body`, then `settle` more calls: a client that
    /// is still resolving its target reports `UNAVAILABLE` or `DEADLINE_EXCEEDED`, which the
    /// returned [`Switch`] counts.
    pub fn wait_served_by(&self, body: &str, within: Duration, settle: usize) -> Switch {
        self.skip_pending();
        self.watch(body, Instant::now(), within, settle)
    }

    /// Drops the calls so far, runs `change` (kill a zone, edit the endpoints file, restart the
    /// server...), and then watches the calls until one is answered by `to` (up to `within` after
    /// the change began), then `settle` more. Every failed call on the way is counted.
    pub fn switch(
        &self,
        to: &str,
        within: Duration,
        settle: usize,
        change: impl FnOnce(),
    ) -> Switch {
        self.skip_pending();
        let since = Instant::now();
        change();
        self.watch(to, since, within, settle)
    }

    fn watch(&self, to: &str, since: Instant, within: Duration, settle: usize) -> Switch {
        crate::traffic::watch_switch(to, since, within, settle, || {
            self.next_call(LINE_WAIT)
                .map(|call| (call.at, call.outcome))
        })
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for GrpcClient {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- {} client {} log ({}), last lines ----\n{}\n---- end of {} client {} log ----",
                self.library,
                self.node_id,
                self.log_path.display(),
                crate::tail(&self.log(), 40),
                self.library,
                self.node_id
            );
        }
        self.kill();
    }
}

/// Longest failure detail kept in an outcome, so that a [`Tally`] groups failures by what they say.
const MAX_DETAIL: usize = 80;

/// A failure's details with every run of digits as `#`: they carry ports, addresses and elapsed times
/// ("Deadline exceeded after 0.995s") that would make every failure a reason of its own.
fn failure_reason(details: &str) -> String {
    let mut out = String::new();
    for c in details.chars() {
        if !c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('#') {
            out.push('#');
        }
        if out.chars().count() >= MAX_DETAIL {
            break;
        }
    }
    out
}

/// A driver's line: a call, or `{"stopped":true}`.
fn parse_line(line: &str) -> Line {
    let stopped = serde_json::from_str::<Json>(line).is_ok_and(|v| v["stopped"] == true);
    if stopped {
        Line::Stopped
    } else {
        Line::Call(parse_call(line))
    }
}

/// A driver's line: `{"ok":true,"body":..,"backend":..}` or `{"ok":false,"code":..,"error":..}`.
fn parse_call(line: &str) -> Call {
    let at = Instant::now();
    let Ok(v) = serde_json::from_str::<Json>(line) else {
        return Call {
            at,
            outcome: Err(format!("driver printed a non-JSON line: {line}")),
            backend: None,
        };
    };
    let text = |key: &str| v[key].as_str().unwrap_or_default().to_string();
    if v["ok"].as_bool() == Some(true) {
        return Call {
            at,
            outcome: Ok(text("body").trim().to_string()),
            backend: Some(text("backend")),
        };
    }
    Call {
        at,
        outcome: Err(format!(
            "{}: {}",
            text("code"),
            failure_reason(&text("error"))
        )),
        backend: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drivers_lines_become_outcomes() {
        let ok = parse_call(r#"{"ok":true,"body":"us-east1-b","backend":"us-east1-b-0","ms":2}"#);
        assert_eq!(ok.outcome, Ok("us-east1-b".to_string()));
        assert_eq!(ok.backend.as_deref(), Some("us-east1-b-0"));
        let long = "x".repeat(500);
        let failed = parse_call(&format!(
            r#"{{"ok":false,"code":"UNAVAILABLE","error":"{long}","ms":1}}"#
        ));
        let reason = failed.outcome.unwrap_err();
        assert!(reason.starts_with("UNAVAILABLE: x"), "{reason}");
        assert_eq!(reason.len(), "UNAVAILABLE: ".len() + MAX_DETAIL);
        assert!(parse_call("not json").outcome.is_err());
        assert!(matches!(parse_line(r#"{"stopped":true}"#), Line::Stopped));
        assert!(matches!(
            parse_line(r#"{"ok":true,"body":"b"}"#),
            Line::Call(_)
        ));
        let timed_out = |after: &str| {
            parse_call(&format!(
                r#"{{"ok":false,"code":"DEADLINE_EXCEEDED","error":"Deadline exceeded after {after}s"}}"#
            ))
            .outcome
        };
        assert_eq!(timed_out("0.995"), timed_out("1.002"));
        assert_eq!(
            timed_out("0.995").unwrap_err(),
            "DEADLINE_EXCEEDED: Deadline exceeded after #.#s"
        );
    }

    #[test]
    fn the_bootstrap_names_the_node_its_locality_and_the_server() {
        let zone = crate::topology::EAST_B;
        let opts =
            GrpcClientOptions::new("n1", zone, ([127, 0, 0, 1], 1234).into(), "echo.demo:8080")
                .namespace("demo");
        let b = opts.bootstrap();
        assert_eq!(b["xds_servers"][0]["server_uri"], "127.0.0.1:1234");
        assert_eq!(b["xds_servers"][0]["channel_creds"][0]["type"], "insecure");
        assert_eq!(b["node"]["id"], "n1");
        assert_eq!(b["node"]["locality"]["region"], zone.region);
        assert_eq!(b["node"]["locality"]["zone"], zone.zone);
        assert_eq!(b["node"]["metadata"]["namespace"], "demo");
    }
}
