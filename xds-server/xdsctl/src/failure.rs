//! The errors xdsctl reports: one line on stderr each, saying what went wrong and what to try.

use crate::transport::tls_problem;

/// An error for the user: one line.
#[derive(Debug)]
pub enum Failure {
    Unreachable {
        addr: String,
        cause: String,
        tls: bool,
    },
    Server(tonic::Status),
    Usage(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unreachable { addr, cause, tls } => match tls_problem(cause) {
                Some(problem) => write!(
                    f,
                    "cannot talk to the xds-server admin API at {addr}: {problem} ({cause})"
                ),
                None if *tls => write!(
                    f,
                    "cannot reach the xds-server admin API at {addr}: {cause} (is xds-server running \
                     with --admin-addr {addr} and TLS? set --admin-addr or XDS_ADMIN_ADDR)"
                ),
                None => write!(
                    f,
                    "cannot reach the xds-server admin API at {addr}: {cause} (is xds-server running \
                     with --admin-addr {addr}? set --admin-addr or XDS_ADMIN_ADDR; if its admin port \
                     uses TLS, pass --ca)"
                ),
            },
            Failure::Server(status) if status.code() == tonic::Code::Unauthenticated => {
                write!(f, "UNAUTHENTICATED: {}", one_line(status.message()))
            }
            Failure::Server(status) => {
                let code = format!("{:?}", status.code());
                write!(f, "{}: {}", code, one_line(status.message()))
            }
            Failure::Usage(m) => f.write_str(m),
        }
    }
}

pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The innermost cause of an error ("Connection refused (os error 111)"), not tonic's "transport error".
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    one_line(&cur.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_is_one_line_that_names_the_address() {
        let f = Failure::Unreachable {
            addr: "127.0.0.1:1".into(),
            cause: "Connection refused (os error 111)".into(),
            tls: false,
        };
        let text = f.to_string();
        assert!(!text.contains('\n'));
        assert!(text.starts_with(
            "cannot reach the xds-server admin API at 127.0.0.1:1: Connection refused"
        ));
    }
}
