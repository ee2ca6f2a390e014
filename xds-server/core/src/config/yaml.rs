//! Helpers shared by the YAML file sources (the endpoints file and the failover policy files): field
//! paths, turning serde_yaml_ng errors into (line, field, reason), finding the line of a field for
//! errors found after deserialization, "did you mean" hints and name checks.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// A path to a value inside one YAML document, displayed like `services[0].endpoints[1].port`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldPath(Vec<Seg>);

impl FieldPath {
    pub(crate) fn root() -> Self {
        Self(Vec::new())
    }

    pub(crate) fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_string()));
        Self(segs)
    }

    pub(crate) fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        Self(segs)
    }

    pub(crate) fn segs(&self) -> &[Seg] {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(index) => write!(f, "[{index}]")?,
                Seg::Key(key) if is_plain_key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(key)?;
                }
                // Label keys like `topology.istio.io/cluster` would be ambiguous after a dot.
                Seg::Key(key) => write!(f, "[{key:?}]")?,
            }
        }
        Ok(())
    }
}

fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A 1-based position in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    fn of(err: &serde_yaml_ng::Error) -> Option<Pos> {
        err.location().map(|l| Pos {
            line: l.line(),
            column: l.column(),
        })
    }
}

/// What a serde_yaml_ng error says, split into the parts our errors and logs carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Empty when the problem is the document as a whole.
    pub field: String,
    pub reason: String,
}

/// A YAML syntax error (the document could not be parsed at all).
pub(crate) fn syntax_problem(err: &serde_yaml_ng::Error) -> Problem {
    let pos = Pos::of(err);
    Problem {
        line: pos.map(|p| p.line),
        column: pos.map(|p| p.column),
        field: String::new(),
        reason: strip_position(&err.to_string(), pos),
    }
}

/// A schema error from deserializing well-formed YAML into our types: unknown field (with a "did you
/// mean" hint when a known field is close), missing field, wrong type.
pub(crate) fn schema_problem(err: &serde_yaml_ng::Error) -> Problem {
    let pos = Pos::of(err);
    let message = strip_position(&err.to_string(), pos);
    // serde_yaml_ng writes `path: message`; the path has no spaces, messages always do before a colon.
    let (mut field, mut reason) = match message.split_once(": ") {
        Some((path, rest))
            if !path.is_empty()
                && pos.is_some()
                && !path.contains(char::is_whitespace)
                && !path.contains('`') =>
        {
            // A root sequence displays as `.[0]`.
            (path.trim_start_matches('.').to_string(), rest.to_string())
        }
        _ => (String::new(), message.clone()),
    };
    let names = backticked(&reason);
    let join = |field: &str, name: &str| {
        if field.is_empty() {
            name.to_string()
        } else {
            format!("{field}.{name}")
        }
    };
    if reason.starts_with("unknown field") {
        if let Some((unknown, known)) = names.split_first() {
            field = join(&field, unknown);
            let known: Vec<&str> = known.iter().map(String::as_str).collect();
            reason.push_str(&hint(unknown, &known));
        }
    } else if reason.starts_with("missing field") || reason.starts_with(DUPLICATE_KEY) {
        if let Some(missing) = names.first() {
            field = join(&field, missing);
        }
    }
    Problem {
        line: pos.map(|p| p.line),
        column: pos.map(|p| p.column),
        field,
        reason,
    }
}

/// Removes serde_yaml_ng's ` at line L column C` (our messages carry the position up front).
fn strip_position(message: &str, pos: Option<Pos>) -> String {
    match pos {
        Some(p) => message.replacen(&format!(" at line {} column {}", p.line, p.column), "", 1),
        None => message.to_string(),
    }
}

/// The `…` quoted words of a serde message, in order.
fn backticked(message: &str) -> Vec<String> {
    message
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The known name the unknown one was most likely meant to be, if any is close enough.
pub(crate) fn did_you_mean<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    let normalize = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let unknown_n = normalize(unknown);
    let budget = (unknown_n.chars().count() / 4).clamp(1, 3);
    known
        .iter()
        .map(|k| (edit_distance(&unknown_n, &normalize(k)), *k))
        .filter(|(d, _)| *d <= budget)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// The hint ending a message, "; did you mean `NAME`?" with the known name closest to `unknown` (see
/// [`did_you_mean`]), or nothing.
pub(crate) fn hint(unknown: &str, known: &[&str]) -> String {
    did_you_mean(unknown, known)
        .map(|k| format!("; did you mean `{k}`?"))
        .unwrap_or_default()
}

/// Edit distance over chars (optimal string alignment: insertions, deletions, substitutions and
/// transpositions of neighbours each cost 1, so `lables` is 1 away from `labels`).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// Checks a Kubernetes-style name (DNS-1123 label): lowercase letters, digits and `-`, starting and
/// ending with a letter or digit, at most 63 characters. `what` names the thing for the message.
pub(crate) fn check_dns_label(value: &str, what: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    let valid_chars = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let valid_ends = !value.starts_with('-') && !value.ends_with('-');
    if value.len() > 63 || !valid_chars || !valid_ends {
        return Err(format!(
            "{what} {value:?} is not a valid DNS-1123 label (lowercase letters, digits and '-', \
             starting and ending with a letter or digit, at most 63 characters)"
        ));
    }
    Ok(())
}

/// Checks a Kubernetes object name (DNS-1123 subdomain: labels as above joined by dots, at most 253
/// characters).
pub(crate) fn check_dns_subdomain(value: &str, what: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if value.len() > 253 || value.split('.').any(|l| check_dns_label(l, what).is_err()) {
        return Err(format!(
            "{what} {value:?} is not a valid DNS-1123 subdomain (lowercase letters, digits, '-' and \
             '.', each part starting and ending with a letter or digit, at most 253 characters)"
        ));
    }
    Ok(())
}

/// The first pass over one document: checks that it is well-formed YAML without duplicate keys in any
/// mapping (serde would silently keep the last one in a map), and tells whether it is empty (null).
/// A duplicate key is reported as a custom error `duplicate key `K`` at the key's position, which
/// [`schema_problem`] turns into field `PATH.K`; anything else is a syntax error.
pub(crate) fn probe<'de, D: de::Deserializer<'de>>(document: D) -> Result<bool, D::Error> {
    document.deserialize_any(Probe)
}

/// Whether a [`probe`] error is a duplicate key (a schema problem) rather than malformed YAML.
pub(crate) fn is_duplicate_key(err: &serde_yaml_ng::Error) -> bool {
    err.to_string().contains(DUPLICATE_KEY)
}

const DUPLICATE_KEY: &str = "duplicate key `";

/// A mapping that refuses duplicate keys while it is deserialized, as [`probe`] does for a whole
/// document. With every free-form mapping of a format held in one, a document that deserializes
/// whole has passed what [`probe`] checks, so the common case needs one parse instead of two.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UniqueKeys<V>(pub BTreeMap<String, V>);

impl<V> Default for UniqueKeys<V> {
    fn default() -> Self {
        UniqueKeys(BTreeMap::new())
    }
}

impl<V> IntoIterator for UniqueKeys<V> {
    type Item = (String, V);
    type IntoIter = std::collections::btree_map::IntoIter<String, V>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'de, V: de::Deserialize<'de>> de::Deserialize<'de> for UniqueKeys<V> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries<V>(std::marker::PhantomData<V>);
        impl<'de, V: de::Deserialize<'de>> Visitor<'de> for Entries<V> {
            type Value = UniqueKeys<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    if out.contains_key(&key) {
                        return Err(de::Error::custom(format!("{DUPLICATE_KEY}{key}`")));
                    }
                    let value = map.next_value()?;
                    out.insert(key, value);
                }
                Ok(UniqueKeys(out))
            }
        }
        d.deserialize_map(Entries(std::marker::PhantomData))
    }
}

struct Probe;

impl<'de> DeserializeSeed<'de> for Probe {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Probe {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element_seed(Probe)?.is_some() {}
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut seen = Vec::new();
        while map.next_key_seed(UniqueKey { seen: &mut seen })?.is_some() {
            map.next_value_seed(Probe)?;
        }
        Ok(false)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<bool, A::Error> {
        // A custom tag (`!thing value`).
        let (IgnoredAny, variant) = data.variant()?;
        de::VariantAccess::newtype_variant_seed(variant, Probe)?;
        Ok(false)
    }
}

/// A mapping key, rejected (at its own position) if the mapping already had it.
struct UniqueKey<'s> {
    seen: &'s mut Vec<String>,
}

impl UniqueKey<'_> {
    fn check<E: de::Error>(self, key: String) -> Result<(), E> {
        if self.seen.contains(&key) {
            return Err(E::custom(format!(
                "{DUPLICATE_KEY}{key}` (each key may appear once)"
            )));
        }
        self.seen.push(key);
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for UniqueKey<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueKey<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.check(v.to_string())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.check(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.check(v.to_string())
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<(), E> {
        self.check(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.check(v.to_string())
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<(), E> {
        self.check(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.check(v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.check("null".to_string())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.check("null".to_string())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Probe)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        Probe.visit_map(map).map(|_| ())
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        Probe.visit_enum(data).map(|_| ())
    }
}

const FOUND: &str = "\u{1}xds-locate-found\u{1}";

/// The position of the value at `path` in document `doc` (0-based) of `text`; for a path ending in a
/// key, the position of that key. `None` if the path does not exist.
pub(crate) fn locate(text: &str, doc: usize, path: &FieldPath) -> Option<Pos> {
    let document = serde_yaml_ng::Deserializer::from_str(text).nth(doc)?;
    match (Locate { path: path.segs() }).deserialize(document) {
        Err(err) if err.to_string().contains(FOUND) => Pos::of(&err),
        _ => None,
    }
}

/// Like [`locate`], but falls back to the closest existing ancestor (for example the endpoint whose
/// `address` is missing).
pub(crate) fn locate_nearest(text: &str, doc: usize, path: &FieldPath) -> Option<Pos> {
    let mut segs = path.segs().to_vec();
    loop {
        if let Some(pos) = locate(text, doc, &FieldPath(segs.clone())) {
            return Some(pos);
        }
        segs.pop()?;
    }
}

/// Walks one document along a path and fails, on purpose, at the target node: serde_yaml_ng attaches
/// the node's position to the error.
struct Locate<'p> {
    path: &'p [Seg],
}

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.path.split_first() {
            None => d.deserialize_any(Found),
            Some((Seg::Index(index), rest)) => d.deserialize_any(InSeq {
                index: *index,
                rest,
            }),
            Some((Seg::Key(key), rest)) => d.deserialize_any(InMap { key, rest }),
        }
    }
}

/// Every `visit_*` defaults to an "invalid type" error whose text includes `expecting`, i.e. the marker.
struct Found;

impl<'de> Visitor<'de> for Found {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(FOUND)
    }
}

struct InSeq<'p> {
    index: usize,
    rest: &'p [Seg],
}

impl<'de> Visitor<'de> for InSeq<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        for _ in 0..self.index {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Locate { path: self.rest })?;
        Ok(())
    }
}

struct InMap<'p> {
    key: &'p str,
    rest: &'p [Seg],
}

impl<'de> Visitor<'de> for InMap<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let terminal = self.rest.is_empty();
        while let Some(matched) = map.next_key_seed(Key {
            key: self.key,
            fail_on_match: terminal,
        })? {
            if matched {
                return map.next_value_seed(Locate { path: self.rest });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

/// Deserializes a mapping key, answering whether it is the one we look for (or failing right there,
/// at the key's position, when the key itself is the target).
struct Key<'p> {
    key: &'p str,
    fail_on_match: bool,
}

impl Key<'_> {
    fn check<E: de::Error>(&self, key: &str) -> Result<bool, E> {
        if key != self.key {
            Ok(false)
        } else if self.fail_on_match {
            Err(E::custom(FOUND))
        } else {
            Ok(true)
        }
    }
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        self.check(v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

#[cfg(test)]
mod tests;
