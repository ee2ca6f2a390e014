//! A tiny blocking HTTP/1.1 client: one request per connection (`Connection: close`), with a deadline.
//! Enough for Envoy's admin API and for sending traffic through Envoy; handles Content-Length, chunked
//! and read-to-close bodies.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` with `Host: host` on a new connection; the whole exchange must finish within `timeout`.
pub fn get(addr: SocketAddr, host: &str, path: &str, timeout: Duration) -> io::Result<Response> {
    request(addr, "GET", host, path, timeout)
}

/// `POST path` with an empty body (Envoy's admin API wants POST for mutations).
pub fn post(addr: SocketAddr, host: &str, path: &str, timeout: Duration) -> io::Result<Response> {
    request(addr, "POST", host, path, timeout)
}

fn request(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    timeout: Duration,
) -> io::Result<Response> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(timeout))?;
    let content_length = if method == "GET" {
        ""
    } else {
        "Content-Length: 0\r\n"
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: xds-e2e\r\nAccept: */*\r\n\
         {content_length}Connection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes())?;

    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut head: Option<Head> = None;
    loop {
        if let Some(h) = &head {
            if let Some(body) = complete_body(h, &buf[h.body_start..]) {
                return Ok(h.response(body));
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no complete response within {timeout:?}"),
            ));
        }
        stream.set_read_timeout(Some(remaining))?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no complete response within {timeout:?}"),
                ))
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if head.is_none() {
            if let Some(pos) = find(&buf, b"\r\n\r\n") {
                head = Some(parse_head(&buf[..pos], pos + 4)?);
            }
        }
    }
    // The peer closed the connection.
    let Some(h) = head else {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    };
    let data = &buf[h.body_start..];
    match h.framing {
        Framing::Eof => Ok(h.response(data.to_vec())),
        _ => complete_body(&h, data)
            .map(|b| h.response(b))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in the middle of the body",
                )
            }),
    }
}

enum Framing {
    Length(usize),
    Chunked,
    Eof,
}

struct Head {
    status: u16,
    headers: Vec<(String, String)>,
    framing: Framing,
    body_start: usize,
}

impl Head {
    fn response(&self, body: Vec<u8>) -> Response {
        Response {
            status: self.status,
            headers: self.headers.clone(),
            body,
        }
    }
}

fn parse_head(raw: &[u8], body_start: usize) -> io::Result<Head> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let text = std::str::from_utf8(raw).map_err(|_| bad("response head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad(&format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let framing = if status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::Length(0)
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        Framing::Chunked
    } else if let Some(len) = get("content-length") {
        Framing::Length(len.parse().map_err(|_| bad("bad content-length"))?)
    } else {
        Framing::Eof
    };
    Ok(Head {
        status,
        headers,
        framing,
        body_start,
    })
}

fn complete_body(head: &Head, data: &[u8]) -> Option<Vec<u8>> {
    match head.framing {
        Framing::Length(n) => (data.len() >= n).then(|| data[..n].to_vec()),
        Framing::Chunked => decode_chunked(data),
        Framing::Eof => None,
    }
}

/// The decoded body once the last (zero-size) chunk has arrived.
fn decode_chunked(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if data.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_decode_only_when_complete() {
        assert_eq!(decode_chunked(b"5\r\nhello\r\n"), None);
        assert_eq!(
            decode_chunked(b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n").as_deref(),
            Some(&b"hello world"[..])
        );
    }

    #[test]
    fn heads_parse() {
        let h = parse_head(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 19", 0).unwrap();
        assert_eq!(h.status, 503);
        assert!(matches!(h.framing, Framing::Length(19)));
    }
}
