//! What xdsctl prints for each command in table mode (`-o table`, the default), one module per
//! command, and the aligned tables and small texts they share.

pub mod config;
pub mod events;
pub mod explain;
pub mod policies;
pub mod services;
pub mod status;
pub mod top;

use xds_admin_api::{self as pb, SyncStatus};

/// Left-aligned columns separated by three spaces; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let width = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(width(cell));
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[i] - width(cell) + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// [`table`] without the header line.
pub fn table_body(rows: &[Vec<String>]) -> String {
    let headers = vec![""; rows.first().map_or(0, Vec::len)];
    let text = table(&headers, rows);
    text.split_once('\n')
        .map(|(_, rest)| rest.to_string())
        .unwrap_or_default()
}

pub fn locality_text(l: Option<&pb::Locality>) -> String {
    let l = l.cloned().unwrap_or_default();
    let part = |s: &str| if s.is_empty() { "-" } else { s }.to_string();
    format!(
        "{}/{}/{}",
        part(&l.region),
        part(&l.zone),
        part(&l.sub_zone)
    )
}

pub fn protocol_text(p: i32) -> &'static str {
    match pb::Protocol::try_from(p) {
        Ok(pb::Protocol::Sotw) => "SotW",
        Ok(pb::Protocol::Delta) => "Delta",
        _ => "-",
    }
}

pub fn client_kind_text(k: i32) -> &'static str {
    match pb::ClientKind::try_from(k) {
        Ok(pb::ClientKind::Envoy) => "envoy",
        Ok(pb::ClientKind::Grpc) => "grpc",
        _ => "-",
    }
}

pub fn status_label(s: i32) -> &'static str {
    SyncStatus::try_from(s).map_or("NOT SENT", SyncStatus::label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_do_not_pad_the_last() {
        let t = table(
            &["A", "LONG HEADER", "C"],
            &[
                vec!["xxxxx".into(), "y".into(), "z".into()],
                vec!["é".into(), "".into(), "last".into()],
            ],
        );
        assert_eq!(
            t,
            "A       LONG HEADER   C\nxxxxx   y             z\né                     last\n"
        );
    }
}
