//! The real `xds-server` binary as a child process with JSON logs, and what its log says about when
//! snapshots were published.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};

use super::procfs::{self, ProcSample};

/// The log line the server writes once it serves (its sources have a complete view).
pub const READY_LINE: &str = "first complete snapshot built";
const PUBLISH_LINE: &str = "publishing new snapshot";
const RELOAD_LINE: &str = "endpoints file reloaded";

pub struct ServerProcess {
    child: Child,
    pub port: u16,
    pub log_path: PathBuf,
}

/// One "publishing new snapshot" log line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Publish {
    pub at: SystemTime,
    pub generation: u64,
    /// How long building the snapshot took (logged by the server).
    pub build_us: u64,
}

/// The server's last "cache" statistics line.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct CacheLine {
    pub classes: u64,
    pub eds_answers: u64,
    pub cached_bytes: u64,
}

impl ServerProcess {
    /// Starts `bin --source file --endpoints FILE --xds-addr 127.0.0.1:PORT --log-format json EXTRA…`
    /// with its stdout and stderr appended to `log_path`.
    pub fn start(
        bin: &Path,
        endpoints: &Path,
        log_path: &Path,
        extra: &[String],
    ) -> anyhow::Result<Self> {
        Self::start_on(crate::ports::free_port(), bin, endpoints, log_path, extra)
    }

    /// [`ServerProcess::start`] on a given xDS port: a replacement for a server that died, on its
    /// address, as a restarted pod behind the same Service.
    pub fn start_on(
        port: u16,
        bin: &Path,
        endpoints: &Path,
        log_path: &Path,
        extra: &[String],
    ) -> anyhow::Result<Self> {
        let source = [
            "--source".into(),
            "file".into(),
            "--endpoints".into(),
            endpoints.into(),
        ];
        Self::start_with_source_on(port, bin, &source, log_path, extra)
    }

    /// Starts the server on another source than the endpoints file: `source` are its flags (e.g.
    /// `--source kubernetes --kubeconfig PATH`).
    pub fn start_with_source(
        bin: &Path,
        source: &[std::ffi::OsString],
        log_path: &Path,
        extra: &[String],
    ) -> anyhow::Result<Self> {
        Self::start_with_source_on(crate::ports::free_port(), bin, source, log_path, extra)
    }

    fn start_with_source_on(
        port: u16,
        bin: &Path,
        source: &[std::ffi::OsString],
        log_path: &Path,
        extra: &[String],
    ) -> anyhow::Result<Self> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut cmd = Command::new(bin);
        cmd.args(source).args([
            "--xds-addr",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "json",
        ]);
        // Free ports for the server's other listeners, where it has them: a benchmark must not collide
        // with a server already on the defaults (older builds have neither flag).
        let help = server_help(bin);
        for flag in ["--admin-addr", "--metrics-addr"] {
            if help.contains(flag) {
                cmd.args([flag, "127.0.0.1:0"]);
            }
        }
        cmd.args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env("NO_COLOR", "1");
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(ServerProcess {
            child,
            port,
            log_path: log_path.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until the server listens and has built its first snapshot.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "xds-server exited ({status}) before serving; its log:\n{}",
                    crate::tail(&self.log(), 40)
                );
            }
            if self.log().contains(READY_LINE) && crate::ports::is_listening(self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "xds-server not ready within {timeout:?}; its log:\n{}",
                    crate::tail(&self.log(), 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn sample(&self) -> Option<ProcSample> {
        procfs::sample(self.pid())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Every snapshot publication in the log, in order.
    pub fn publishes(&self) -> Vec<Publish> {
        self.log()
            .lines()
            .filter(|l| l.contains(PUBLISH_LINE))
            .filter_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                let fields = v.get("fields")?;
                Some(Publish {
                    at: parse_rfc3339(v.get("timestamp")?.as_str()?)?,
                    generation: fields.get("generation")?.as_u64()?,
                    build_us: fields.get("build_us").and_then(|b| b.as_u64()).unwrap_or(0),
                })
            })
            .collect()
    }

    /// When the server logged that it read and parsed the endpoints file again, in order.
    pub fn reloads(&self) -> Vec<SystemTime> {
        self.log()
            .lines()
            .filter(|l| l.contains(RELOAD_LINE))
            .filter_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                parse_rfc3339(v.get("timestamp")?.as_str()?)
            })
            .collect()
    }

    /// The last cache statistics the server logged (every 10 s when they change).
    pub fn cache_stats(&self) -> Option<CacheLine> {
        self.log().lines().rev().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let f = v.get("fields")?;
            (f.get("message")?.as_str()? == "cache").then(|| CacheLine {
                classes: f.get("classes").and_then(|x| x.as_u64()).unwrap_or(0),
                eds_answers: f.get("eds_answers").and_then(|x| x.as_u64()).unwrap_or(0),
                cached_bytes: f.get("cached_bytes").and_then(|x| x.as_u64()).unwrap_or(0),
            })
        })
    }

    /// Log lines at WARN or ERROR level (none are expected in a benchmark, except the baseline flag's
    /// own warning).
    pub fn warnings(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
            .filter(|l| !l.contains("--no-shared-cache"))
            .map(str::to_string)
            .collect()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `bin --help`, to see which flags this build has.
fn server_help(bin: &Path) -> String {
    Command::new(bin)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// `2025-01-31T12:34:56.123456Z` (what tracing-subscriber's JSON format writes) → `SystemTime`.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn parses_tracing_timestamps() {
        let t = parse_rfc3339("2024-02-29T23:59:58.250000Z").unwrap();
        let d = t.duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(d.as_secs(), 1_709_251_198);
        assert_eq!(d.subsec_millis(), 250);
        assert_eq!(
            parse_rfc3339("1970-01-01T00:00:00Z"),
            Some(UNIX_EPOCH),
            "no fraction"
        );
        assert_eq!(parse_rfc3339("garbage"), None);
    }
}
