//! WatchEvents: the registry's stream of connects, disconnects, pushes, ACKs and NACKs, filtered by
//! node, in proto form.

use std::pin::Pin;
use std::time::SystemTime;

use futures::Stream;
use tokio::sync::broadcast;
use tonic::Status;

use super::convert::{protocol_pb, unix_ms};
use super::pb;
use crate::registry::XdsEvent;

pub fn event_pb(e: &XdsEvent) -> pb::Event {
    let mut out = pb::Event::default();
    match e {
        XdsEvent::Connected {
            at,
            stream_id,
            node,
            protocol,
            locality,
        } => {
            out.kind = "connected".into();
            out.at_unix_ms = unix_ms(*at);
            out.stream_id = *stream_id;
            out.node_id = node.clone();
            out.protocol = protocol_pb(*protocol) as i32;
            out.locality = locality.clone();
        }
        XdsEvent::Disconnected {
            at,
            stream_id,
            node,
        } => {
            out.kind = "disconnected".into();
            out.at_unix_ms = unix_ms(*at);
            out.stream_id = *stream_id;
            out.node_id = node.clone();
        }
        XdsEvent::Pushed {
            at,
            stream_id,
            node,
            type_url,
            version,
            resources,
            bytes,
        } => {
            out.kind = "pushed".into();
            out.at_unix_ms = unix_ms(*at);
            out.stream_id = *stream_id;
            out.node_id = node.clone();
            out.type_url = type_url.clone();
            out.version = version.clone();
            out.resources = *resources as u32;
            out.bytes = *bytes as u64;
        }
        XdsEvent::Acked {
            at,
            stream_id,
            node,
            type_url,
            version,
        } => {
            out.kind = "acked".into();
            out.at_unix_ms = unix_ms(*at);
            out.stream_id = *stream_id;
            out.node_id = node.clone();
            out.type_url = type_url.clone();
            out.version = version.clone();
        }
        XdsEvent::Nacked {
            at,
            stream_id,
            node,
            type_url,
            version,
            error,
        } => {
            out.kind = "nacked".into();
            out.at_unix_ms = unix_ms(*at);
            out.stream_id = *stream_id;
            out.node_id = node.clone();
            out.type_url = type_url.clone();
            out.version = version.clone();
            out.error = error.clone();
        }
        XdsEvent::Failover {
            at,
            service,
            class,
            from_priority,
            to_priority,
            error_ratio,
        } => {
            out.kind = "failover".into();
            out.at_unix_ms = unix_ms(*at);
            out.service = service.clone();
            out.client_class = class.clone();
            out.from_priority = *from_priority;
            out.to_priority = *to_priority;
            out.error_ratio = *error_ratio;
        }
        XdsEvent::Fleet {
            at,
            kind,
            service,
            locality,
            reporters: _,
            requests,
            errors,
            reason,
        } => {
            out.kind = (*kind).into();
            out.at_unix_ms = unix_ms(*at);
            out.service = service.clone();
            out.locality = locality.clone();
            out.error_ratio = if *requests == 0 {
                0.0
            } else {
                *errors as f64 / *requests as f64
            };
            out.reason = reason.clone();
        }
    }
    out
}

pub(super) type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

/// Events from the registry, filtered by node; a reader that falls behind is told how many it lost.
pub(super) fn event_stream(rx: broadcast::Receiver<XdsEvent>, node: String) -> EventStream {
    Box::pin(futures::stream::unfold(rx, move |mut rx| {
        let node = node.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok(e) => {
                        let e = event_pb(&e);
                        if node.is_empty() || e.node_id == node {
                            return Some((Ok(e), rx));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let lagged = pb::Event {
                            kind: "lagged".into(),
                            at_unix_ms: unix_ms(SystemTime::now()),
                            resources: n.min(u64::from(u32::MAX)) as u32,
                            ..pb::Event::default()
                        };
                        return Some((Ok(lagged), rx));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests;
