//! `xds-server`: serves Envoy clusters with locality-priority failover over ADS.

use clap::Parser;
use xds_server::app::{self, Args};

/// Thousands of streams allocate and free many small buffers (request names, responses) from several
/// threads; glibc's malloc spent a third of the server's CPU there under load and kept freed memory
/// fragmented. mimalloc is faster at this and returns memory. Feature `system-allocator` keeps glibc's,
/// for heap profilers that hook malloc (`heaptrack`, see docs/benchmarks.md).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.print_crd && args.check_policies.is_none() {
        app::init_logging(args.log_format);
    }
    app::run(args).await
}
