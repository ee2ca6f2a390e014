//! Resources as readable text: each `Any` decoded to its Envoy type and printed with `{:#?}`, nested
//! `Any`s (filters, retry extensions) decoded in place, and fields at their default value left out, as
//! Envoy's own `config_dump` leaves them out.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

/// How deep nested `Any`s are decoded (ours nest two deep: listener → HCM → router).
const MAX_DEPTH: usize = 4;

/// Decodes `value` as the message named by `type_url` and pretty-prints it; `None` for a type we do
/// not know or bytes that do not decode.
fn debug_text(type_url: &str, value: &[u8]) -> Option<String> {
    fn text<M: Message + Name + Default + std::fmt::Debug>(value: &[u8]) -> Option<String> {
        M::decode(value).ok().map(|m| format!("{m:#?}"))
    }
    let name = type_url.rsplit('/').next().unwrap_or(type_url);
    macro_rules! known {
        ($($t:ty),*) => {
            $(if name == <$t>::full_name() { return text::<$t>(value); })*
        };
    }
    known!(
        Cluster,
        ClusterLoadAssignment,
        Listener,
        RouteConfiguration,
        HttpConnectionManager,
        Router,
        PreviousHostsPredicate,
        PreviousPrioritiesConfig
    );
    None
}

/// A resource as text: the decoded message with defaults omitted and nested `Any`s decoded.
pub fn render_any(any: &Any) -> String {
    render(&any.type_url, &any.value, 0)
}

fn render(type_url: &str, value: &[u8], depth: usize) -> String {
    match debug_text(type_url, value) {
        Some(text) => {
            let expanded = expand_nested_anys(&text, depth);
            prune_defaults(&expanded)
        }
        None => format!("<{} bytes of {type_url}>", value.len()),
    }
}

/// Replaces the `value: [1, 2, ...]` byte list of every pretty-printed `Any` with its decoded text.
fn expand_nested_anys(text: &str, depth: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        out.push(line.to_string());
        i += 1;
        if !line.trim_end().ends_with("Any {") || i + 1 >= lines.len() {
            continue;
        }
        let Some(type_url) = lines[i]
            .trim()
            .strip_prefix("type_url: \"")
            .and_then(|s| s.strip_suffix("\","))
        else {
            continue;
        };
        out.push(lines[i].to_string());
        i += 1;
        let value_line = lines[i];
        let indent = &value_line[..value_line.len() - value_line.trim_start().len()];
        let trimmed = value_line.trim();
        let mut bytes = Vec::new();
        if trimmed == "value: [" {
            i += 1;
            while i < lines.len() && lines[i].trim() != "]," {
                match lines[i].trim().trim_end_matches(',').parse::<u8>() {
                    Ok(b) => bytes.push(b),
                    Err(_) => break,
                }
                i += 1;
            }
            if i >= lines.len() || lines[i].trim() != "]," {
                // Not the shape we expected: keep the text as it was.
                out.extend(lines[i.min(lines.len())..].iter().map(|s| s.to_string()));
                return out.join("\n");
            }
            i += 1; // past "],"
        } else if trimmed == "value: []," {
            i += 1;
        } else {
            continue;
        }
        let nested = if depth < MAX_DEPTH {
            render(type_url, &bytes, depth + 1)
        } else {
            format!("<{} bytes>", bytes.len())
        };
        let mut nested_lines = nested.lines();
        out.push(format!(
            "{indent}value: {},",
            nested_lines.next().unwrap_or_default()
        ));
        let last = out.len() - 1;
        let rest: Vec<String> = nested_lines.map(|l| format!("{indent}{l}")).collect();
        if !rest.is_empty() {
            // Move the trailing comma to the end of the nested block.
            out[last].pop();
            out.extend(rest);
            if let Some(end) = out.last_mut() {
                end.push(',');
            }
        }
    }
    out.join("\n")
}

/// Drops `field: <default>,` lines (None, 0, false, "", [], {}), as Envoy's JSON dumps omit defaults,
/// and closes a message left without fields on its own line (`Router {}`).
fn prune_defaults(text: &str) -> String {
    const DEFAULTS: [&str; 7] = ["None,", "0,", "0.0,", "false,", "\"\",", "[],", "{},"];
    let kept: Vec<&str> = text
        .lines()
        .filter(|line| {
            let t = line.trim();
            let Some((field, value)) = t.split_once(": ") else {
                return true;
            };
            let is_field = !field.is_empty()
                && field
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            !(is_field && DEFAULTS.contains(&value))
        })
        .collect();
    let mut out: Vec<String> = Vec::with_capacity(kept.len());
    for line in kept {
        let closes = line.trim_start().starts_with('}');
        match out.last_mut() {
            Some(prev) if closes && prev.ends_with('{') => {
                prev.push_str(line.trim_start());
            }
            _ => out.push(line.to_string()),
        }
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::util::pack_any;
    use xds_core::translate::resources;

    #[test]
    fn a_listener_renders_with_its_filters_decoded_and_defaults_left_out() {
        let text = render_any(&pack_any(resources::listener("127.0.0.1", 15001)));
        println!("{text}");
        assert!(text.starts_with("Listener {"), "{text}");
        assert!(text.contains("name: \"outbound_http\""), "{text}");
        assert!(
            text.contains("port_value: 15001") || text.contains("PortValue(\n"),
            "{text}"
        );
        assert!(text.contains("value: HttpConnectionManager {"), "{text}");
        assert!(text.contains("route_config_name: \"outbound\""), "{text}");
        assert!(
            text.contains("value: Router {},"),
            "nested two deep: {text}"
        );
        assert!(!text.contains("None,"), "defaults are left out: {text}");
        assert!(
            !text.lines().any(|l| l.trim() == "10,"),
            "no raw bytes: {text}"
        );
    }

    #[test]
    fn unknown_types_and_odd_text_are_left_alone() {
        let any = Any {
            type_url: "type.googleapis.com/example.Unknown".into(),
            value: vec![1, 2, 3],
        };
        assert_eq!(
            render_any(&any),
            "<3 bytes of type.googleapis.com/example.Unknown>"
        );
        let odd = "X {\n    a: Any {\n        type_url: \"t\",\n        other: 1,\n    },\n}";
        assert_eq!(expand_nested_anys(odd, 0), odd);
        assert_eq!(
            prune_defaults("A {\n    a: 0,\n    b: 1,\n    \"k\": \"\",\n    c: [],\n}"),
            "A {\n    b: 1,\n    \"k\": \"\",\n}"
        );
        assert_eq!(
            prune_defaults("A {\n    b: B {\n        c: 0,\n    },\n}"),
            "A {\n    b: B {},\n}"
        );
    }
}
