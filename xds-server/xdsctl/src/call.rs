//! The RPCs: one function per command, each making its call and printing the answer.

use std::time::Duration;

use futures::StreamExt;
use xds_admin_api as pb;

use crate::cli::{Cli, Command, ExplainArgs, Kind, Output};
use crate::failure::Failure;
use crate::output::{emit, print_event, print_out};
use crate::render;
use crate::transport::{Client, Transport};

fn request<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.set_timeout(Duration::from_secs(10));
    r
}

/// Connects and runs the command. `explain_client` is the `explain` client, checked beforehand.
pub async fn call(
    cli: Cli,
    explain_client: Option<pb::explain_priorities_request::Client>,
    transport: &Transport,
) -> Result<(), Failure> {
    let mut client = transport.connect().await?;
    let c = &mut client;
    let out = cli.output;
    match cli.command {
        Command::Status => status(c, transport, out).await,
        Command::Config { node, kind, name } => config(c, transport, out, node, kind, name).await,
        Command::Services => services(c, transport, out).await,
        Command::Explain(a) => explain(c, transport, out, a, explain_client).await,
        Command::Policies => policies(c, transport, out).await,
        Command::Events { node, count } => events(c, transport, out, node, count).await,
        Command::Top { service, once } => top(c, transport, out, service, once).await,
    }
}

async fn status(client: &mut Client, transport: &Transport, out: Output) -> Result<(), Failure> {
    let err = |s| transport.server_error(s);
    let r = client
        .list_clients(request(pb::ListClientsRequest {}))
        .await
        .map_err(err)?
        .into_inner();
    print_out(out, &r, render::status::status_table)
}

async fn config(
    client: &mut Client,
    transport: &Transport,
    out: Output,
    node: String,
    kind: Option<Kind>,
    name: Option<String>,
) -> Result<(), Failure> {
    let err = |s| transport.server_error(s);
    let r = client
        .get_client_config(request(pb::GetClientConfigRequest {
            node_id: node,
            r#type: kind
                .map(|k| format!("{k:?}").to_lowercase())
                .unwrap_or_default(),
            name: name.unwrap_or_default(),
        }))
        .await
        .map_err(err)?
        .into_inner();
    print_out(out, &r, render::config::config_text)
}

async fn services(client: &mut Client, transport: &Transport, out: Output) -> Result<(), Failure> {
    let err = |s| transport.server_error(s);
    let r = client
        .list_services(request(pb::ListServicesRequest {}))
        .await
        .map_err(err)?
        .into_inner();
    print_out(out, &r, render::services::services_table)
}

async fn explain(
    client: &mut Client,
    transport: &Transport,
    out: Output,
    a: ExplainArgs,
    explain_client: Option<pb::explain_priorities_request::Client>,
) -> Result<(), Failure> {
    let err = |s| transport.server_error(s);
    let r = client
        .explain_priorities(request(pb::ExplainPrioritiesRequest {
            service: a.service,
            port: a.port.map_or(0, u32::from),
            client: explain_client,
        }))
        .await
        .map_err(err)?
        .into_inner();
    print_out(out, &r, render::explain::explain_text)
}

async fn policies(client: &mut Client, transport: &Transport, out: Output) -> Result<(), Failure> {
    let err = |s| transport.server_error(s);
    let r = client
        .list_policies(request(pb::ListPoliciesRequest {}))
        .await
        .map_err(err)?
        .into_inner();
    print_out(out, &r, render::policies::policies_text)
}

/// Follows the event stream until `count` events were printed, or forever.
async fn events(
    client: &mut Client,
    transport: &Transport,
    out: Output,
    node: Option<String>,
    count: Option<usize>,
) -> Result<(), Failure> {
    let err = |s| transport.server_error(s);
    let mut stream = client
        .watch_events(pb::WatchEventsRequest {
            node_id: node.unwrap_or_default(),
        })
        .await
        .map_err(err)?
        .into_inner();
    let mut seen = 0;
    while count.is_none_or(|c| seen < c) {
        match stream.next().await {
            Some(Ok(e)) => {
                print_event(out, &e);
                seen += 1;
            }
            Some(Err(status)) => return Err(transport.server_error(status)),
            None => return Err(transport.unreachable("the server closed the event stream".into())),
        }
    }
    Ok(())
}

/// `--once`: one GetLoad. Otherwise WatchLoad, each answer redrawn over the last (a table) or printed on
/// a line of its own (JSON), until the server ends the stream or the user interrupts.
async fn top(
    client: &mut Client,
    transport: &Transport,
    out: Output,
    service: Option<String>,
    once: bool,
) -> Result<(), Failure> {
    let err = |s| transport.server_error(s);
    let wanted = pb::GetLoadRequest {
        service: service.unwrap_or_default(),
    };
    if once {
        let r = client
            .get_load(request(wanted))
            .await
            .map_err(err)?
            .into_inner();
        return print_out(out, &r, render::top::top_table);
    }
    let mut stream = client.watch_load(wanted).await.map_err(err)?.into_inner();
    loop {
        match stream.next().await {
            Some(Ok(r)) => match out {
                Output::Json => emit(&format!(
                    "{}\n",
                    serde_json::to_string(&r).expect("admin messages serialize")
                )),
                // Clear the screen and home the cursor, then draw: a live view like `top`.
                Output::Table => emit(&format!("\x1b[2J\x1b[H{}", render::top::top_table(&r))),
            },
            Some(Err(status)) => return Err(transport.server_error(status)),
            None => return Err(transport.unreachable("the server closed the load stream".into())),
        }
    }
}
