//! Small helpers: query strings, timestamps, Status bodies, patches.

use std::time::SystemTime;

use serde_json::{json, Map, Value};

/// An API error, answered as a `Status` body with this HTTP code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
        }
    }

    pub fn not_found(plural: &str, name: &str) -> ApiError {
        ApiError::new(404, "NotFound", format!("{plural} \"{name}\" not found"))
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn expired(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    pub fn status(&self) -> Value {
        status(self.code, self.reason, &self.message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

/// A `meta/v1 Status` failure object.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space, `%XX` escapes).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decoded `key=value` pairs of a query string, in order.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

/// Lower-case hex of a string, for opaque continue tokens.
pub fn hex_encode(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

pub fn hex_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = b
        .chunks(2)
        .map(|c| Some(hex_val(c[0])? * 16 + hex_val(c[1])?))
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Now, as RFC 3339 UTC with second precision (`2025-01-02T03:04:05Z`), as Kubernetes writes
/// `creationTimestamp`.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn unescape_token(t: &str) -> String {
    t.replace("~1", "/").replace("~0", "~")
}

/// Splits a JSON pointer into its parent pointer and last token.
fn split_pointer(path: &str) -> Result<(String, String), String> {
    if path.is_empty() {
        return Err("cannot operate on the whole document".into());
    }
    let idx = path
        .rfind('/')
        .ok_or_else(|| format!("bad pointer {path:?}"))?;
    Ok((path[..idx].to_string(), unescape_token(&path[idx + 1..])))
}

fn add_at(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let (parent, last) = split_pointer(path)?;
    let p = doc
        .pointer_mut(&parent)
        .ok_or_else(|| format!("path {parent:?} not found"))?;
    match p {
        Value::Object(m) => {
            m.insert(last, value);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
                return Ok(());
            }
            let i: usize = last.parse().map_err(|_| format!("bad index {last:?}"))?;
            if i > a.len() {
                return Err(format!("index {i} out of range"));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err(format!("path {parent:?} is not a container")),
    }
}

fn remove_at(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    let p = doc
        .pointer_mut(&parent)
        .ok_or_else(|| format!("path {parent:?} not found"))?;
    match p {
        Value::Object(m) => m
            .remove(&last)
            .ok_or_else(|| format!("path {path:?} not found")),
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| format!("bad index {last:?}"))?;
            if i >= a.len() {
                return Err(format!("index {i} out of range"));
            }
            Ok(a.remove(i))
        }
        _ => Err(format!("path {parent:?} is not a container")),
    }
}

/// RFC 6902 JSON patch: add, remove, replace, move, copy, test.
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), String> {
    let ops = patch.as_array().ok_or("a JSON patch is an array")?;
    let mut work = doc.clone();
    for op in ops {
        let kind = op.get("op").and_then(Value::as_str).ok_or("op missing")?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or("path missing")?;
        let value = op.get("value").cloned();
        let from = op.get("from").and_then(Value::as_str);
        match kind {
            "add" => add_at(&mut work, path, value.ok_or("value missing")?)?,
            "remove" => {
                remove_at(&mut work, path)?;
            }
            "replace" => {
                let slot = work
                    .pointer_mut(path)
                    .ok_or_else(|| format!("path {path:?} not found"))?;
                *slot = value.ok_or("value missing")?;
            }
            "move" => {
                let v = remove_at(&mut work, from.ok_or("from missing")?)?;
                add_at(&mut work, path, v)?;
            }
            "copy" => {
                let from = from.ok_or("from missing")?;
                let v = work
                    .pointer(from)
                    .cloned()
                    .ok_or_else(|| format!("path {from:?} not found"))?;
                add_at(&mut work, path, v)?;
            }
            "test" => {
                if work.pointer(path) != value.as_ref() {
                    return Err(format!("test failed at {path:?}"));
                }
            }
            other => return Err(format!("unknown op {other:?}")),
        }
    }
    *doc = work;
    Ok(())
}

/// The `meta.k8s.io/v1 PartialObjectMetadata` form of an object.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = query_pairs("labelSelector=app%3Dweb%2Ctier%21%3Dx&watch=true&x&a=b+c&bad=%zz");
        assert_eq!(
            q,
            vec![
                ("labelSelector".into(), "app=web,tier!=x".into()),
                ("watch".into(), "true".into()),
                ("x".into(), String::new()),
                ("a".into(), "b c".into()),
                ("bad".into(), "%zz".into()),
            ]
        );
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("a%4"), "a%4");
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex_decode(&hex_encode("12/ns/a b")).unwrap(), "12/ns/a b");
        assert!(hex_decode("zz").is_none());
    }

    #[test]
    fn timestamp_shape() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
        assert!(t.as_str() > "2024-01-01T00:00:00Z");
    }

    #[test]
    fn patches() {
        let mut d = json!({"a": {"b": 1, "c": [1, 2]}, "d": 1});
        merge_patch(&mut d, &json!({"a": {"b": null, "e": 2}, "d": [3]}));
        assert_eq!(d, json!({"a": {"c": [1, 2], "e": 2}, "d": [3]}));
        json_patch(
            &mut d,
            &json!([
                {"op": "add", "path": "/a/c/-", "value": 3},
                {"op": "replace", "path": "/d", "value": "x"},
                {"op": "remove", "path": "/a/e"},
                {"op": "copy", "from": "/d", "path": "/f"},
                {"op": "test", "path": "/f", "value": "x"},
            ]),
        )
        .unwrap();
        assert_eq!(d, json!({"a": {"c": [1, 2, 3]}, "d": "x", "f": "x"}));
        assert!(json_patch(&mut d, &json!([{"op": "test", "path": "/d", "value": 1}])).is_err());
        assert_eq!(d["d"], "x");
    }
}
