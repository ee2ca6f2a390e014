//! Scalars with rules of their own: durations (`500ms`, `1m30s`), port numbers, and a service port
//! given by name or number. A file format keeps such a field as [`ScalarText`] (any YAML scalar, as
//! text) and checks it after deserializing, so that `interval: 2` is told it needs a unit rather than
//! getting serde's type error.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::{self, Unexpected, Visitor};
use serde::{Deserialize, Deserializer};

use crate::config::error::Invalid;
use crate::config::yaml::{self, FieldPath};

/// A kind of scalar kept as [`ScalarText`]: what serde says it expects, and the rules of its text.
pub trait Scalar {
    /// serde's "expected …" when the value is not a scalar (a list, a mapping, a boolean).
    const EXPECTING: &'static str;
    /// Whether a float like `1.5` is kept as text (otherwise it is serde's type error).
    const FLOAT: bool;
    type Value;
    fn parse(text: &str) -> Result<Self::Value, String>;
}

/// Any YAML scalar (string, integer, and float where `S` takes one), kept as its text, checked by
/// [`ScalarText::value`].
pub struct ScalarText<S>(pub String, PhantomData<S>);

impl<S: Scalar> ScalarText<S> {
    fn new(text: impl Into<String>) -> Self {
        Self(text.into(), PhantomData)
    }

    /// The text read by `S`'s rules; the error is the reason alone (the caller knows the field).
    pub fn value(&self) -> Result<S::Value, String> {
        S::parse(&self.0)
    }

    /// [`ScalarText::value`] of the field at `path`.
    pub(crate) fn value_at(&self, path: FieldPath) -> Result<S::Value, Invalid> {
        self.value().map_err(|reason| (path, reason))
    }
}

impl<S> fmt::Debug for ScalarText<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ScalarText").field(&self.0).finish()
    }
}

impl<'de, S: Scalar> Deserialize<'de> for ScalarText<S> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor::<S>(PhantomData))
    }
}

struct TextVisitor<S>(PhantomData<S>);

impl<S: Scalar> Visitor<'_> for TextVisitor<S> {
    type Value = ScalarText<S>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(S::EXPECTING)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(ScalarText::new(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(ScalarText::new(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(ScalarText::new(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        if S::FLOAT {
            Ok(ScalarText::new(v.to_string()))
        } else {
            Err(E::invalid_type(Unexpected::Float(v), &self))
        }
    }
}

/// A duration: see [`parse_duration`].
pub enum DurationScalar {}

impl Scalar for DurationScalar {
    const EXPECTING: &'static str = "a duration like `500ms`, `2s` or `1m`";
    const FLOAT: bool = true;
    type Value = Duration;
    fn parse(text: &str) -> Result<Duration, String> {
        parse_duration(text)
    }
}

/// A duration field.
pub type DurationText = ScalarText<DurationScalar>;

/// A service port by name or number: see [`port_name_or_number`].
pub enum PortScalar {}

impl Scalar for PortScalar {
    const EXPECTING: &'static str = "a service port name like `http` or a port number like `8080`";
    const FLOAT: bool = false;
    type Value = String;
    fn parse(text: &str) -> Result<String, String> {
        port_name_or_number(text)
    }
}

/// A field naming one service port, by name or number.
pub type PortText = ScalarText<PortScalar>;

/// Parses `500ms`, `2s`, `1.5s`, `1m`, `1h`, `1m30s` (units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`).
/// Zero, negative and unit-less values are rejected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const FORMS: &str = "write a duration like `500ms`, `2s`, `1.5s` or `1m`";
    let s = text.trim();
    if s.is_empty() {
        return Err(format!("empty duration; {FORMS}"));
    }
    if s.starts_with('-') {
        return Err(format!("negative duration `{s}`; {FORMS}"));
    }
    if s.parse::<f64>().is_ok() {
        return Err(format!("duration `{s}` has no unit; {FORMS}"));
    }
    let garbage = || format!("`{s}` is not a duration; {FORMS}");
    let mut rest = s;
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(garbage)?;
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(garbage()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(garbage());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| garbage())?
        };
        let fraction = &fraction[..fraction.len().min(18)];
        let mut part = whole.checked_mul(unit_nanos).ok_or_else(garbage)?;
        if !fraction.is_empty() {
            let digits: u128 = fraction.parse().map_err(|_| garbage())?;
            part += digits * unit_nanos / 10u128.pow(fraction.len() as u32);
        }
        nanos = nanos.checked_add(part).ok_or_else(garbage)?;
        rest = tail;
    }
    if nanos == 0 {
        return Err(format!("duration `{s}` must be greater than zero"));
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| garbage())?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// A port number, 1 to 65535.
pub fn port_number(port: i64) -> Result<u16, String> {
    match u16::try_from(port) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("port {port} is out of range (1-65535)")),
    }
}

/// One service port by number (1..=65535, returned as its text) or by name as Kubernetes allows them
/// (an IANA service name: at most 15 lowercase letters, digits and `-`, with a letter).
pub fn port_name_or_number(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.chars().all(|c| c.is_ascii_digit() || c == '-') && !text.is_empty() {
        return match text.parse::<i64>() {
            Ok(n @ 1..=65535) => Ok(n.to_string()),
            _ => Err(format!(
                "port number must be between 1 and 65535, got {text}"
            )),
        };
    }
    yaml::check_dns_label(text, "port name")?;
    if text.len() > 15 {
        return Err(format!(
            "port name `{text}` is longer than 15 characters (Kubernetes port names are at most 15)"
        ));
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests;
