//! `xdsctl`: the command-line client of the xds-server admin API (`proto/xds_admin.proto`).
//!
//! ```text
//! xdsctl status                       every connected Envoy, SYNCED / STALE / NACKED / NOT SENT per type
//! xdsctl config NODE [--type T] [--name N]   what one Envoy was sent, readable
//! xdsctl services                     services, endpoints, locality, health, source
//! xdsctl explain SERVICE --node NODE | --locality R/Z/S [--label k=v]...
//! xdsctl policies                     active and rejected failover policies
//! xdsctl events [--node NODE]         tail connects, pushes, ACKs, NACKs, disconnects, failovers
//! xdsctl top [SERVICE] [--once]       observed traffic per locality and priority (LRS), live
//! ```
//!
//! Tables by default, `-o json` for scripts. Exit status 1 on any error, with one line on stderr.
//! TLS with `https://` in `--admin-addr` or `--ca`, a client certificate with `--cert`/`--key`, a
//! bearer token with `--token`/`--token-file`.

mod call;
mod cli;
mod failure;
mod output;
mod render;
mod transport;

use std::process::ExitCode;

use clap::Parser;

use call::call;
use cli::{explain_client, Cli, Command};
use failure::Failure;
use transport::{tls_problem, Transport};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("xdsctl: {failure}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    // Check arguments before connecting, so usage errors are not reported as connection errors.
    let explain_client = match &cli.command {
        Command::Explain(a) => Some(explain_client(a)?),
        _ => None,
    };
    let transport = Transport::from_cli(&cli)?;
    match call(cli, explain_client, &transport).await {
        Err(Failure::Unreachable {
            cause, tls: true, ..
        }) if tls_problem(&cause).is_none() => {
            Err(transport.unreachable(transport.probe().await.unwrap_or(cause)))
        }
        other => other,
    }
}
