//! The in-memory state: objects per kind, a global resourceVersion, bounded per-kind event history,
//! and the open watches (each an unbounded channel of ready-to-send event lines).

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::select::{FieldSelector, LabelSelector};
use crate::util::{self, ApiError};
use crate::{KindInfo, RequestRecord, HISTORY_PER_KIND};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

struct HistEvent {
    rv: u64,
    typ: EventType,
    obj: Value,
    /// The object before a MODIFIED, to tell when it stopped or started matching a selector.
    old: Option<Value>,
}

type Key = (String, String);

struct Kind {
    info: KindInfo,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<HistEvent>,
    /// Every event with a resourceVersion above this is still in `history`.
    floor: u64,
}

struct Watch {
    kind: usize,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    metadata_only: bool,
    bookmarks: bool,
    /// The resourceVersion of the last event sent (or the one the watch started from).
    last_rv: u64,
    tx: UnboundedSender<Bytes>,
}

impl Watch {
    fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace {
            if obj.pointer("/metadata/namespace").and_then(Value::as_str) != Some(ns.as_str()) {
                return false;
            }
        }
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    /// What this watch sees of an event, as the real server filters: a MODIFIED object that
    /// stops matching is a DELETED, one that starts matching is an ADDED.
    fn view(&self, typ: EventType, obj: &Value, old: Option<&Value>) -> Option<EventType> {
        let now = self.matches(obj);
        match typ {
            EventType::Added | EventType::Deleted => now.then_some(typ),
            EventType::Modified => match (old.is_some_and(|o| self.matches(o)), now) {
                (true, true) => Some(EventType::Modified),
                (false, true) => Some(EventType::Added),
                (true, false) => Some(EventType::Deleted),
                (false, false) => None,
            },
        }
    }

    fn send_event(&mut self, typ: &str, obj: &Value, rv: u64) {
        let obj = if self.metadata_only {
            util::partial_metadata(obj)
        } else {
            obj.clone()
        };
        self.send_line(&json!({"type": typ, "object": obj}));
        self.last_rv = rv;
    }

    fn send_line(&self, v: &Value) {
        let mut line = serde_json::to_vec(v).expect("serialize event");
        line.push(b'\n');
        let _ = self.tx.send(Bytes::from(line));
    }

    fn send_bookmark(&mut self, info: &KindInfo, rv: u64, initial_events_end: bool) {
        let (api_version, kind) = if self.metadata_only {
            (
                "meta.k8s.io/v1".to_string(),
                "PartialObjectMetadata".to_string(),
            )
        } else {
            (info.api_version(), info.kind.clone())
        };
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        self.send_line(&json!({
            "type": "BOOKMARK",
            "object": {"apiVersion": api_version, "kind": kind, "metadata": metadata},
        }));
        self.last_rv = rv;
    }

    fn send_expired(&self, requested: u64, oldest: u64) {
        let status = util::status(
            410,
            "Expired",
            &format!("too old resource version: {requested} ({oldest})"),
        );
        self.send_line(&json!({"type": "ERROR", "object": status}));
    }
}

/// Query parameters of a list.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
}

/// Query parameters of a watch.
#[derive(Clone, Debug, Default)]
pub struct WatchQuery {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub resource_version: Option<String>,
    pub bookmarks: bool,
    pub send_initial_events: bool,
}

/// How a PATCH body is to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Apply,
}

pub struct Store {
    rv: u64,
    compacted: u64,
    uids: u64,
    kinds: Vec<Kind>,
    watches: Vec<Watch>,
    /// Watches frozen by [`Store::freeze_watches`]: kept (so their connections stay open) and never
    /// sent anything again.
    frozen: Vec<Watch>,
    pub requests: Vec<RequestRecord>,
    /// Injected failures: plural → HTTP code answered to every request on that resource.
    pub failures: std::collections::HashMap<String, u16>,
    /// The TokenReview API's tokens, faults and count.
    pub token_reviews: crate::token_review::TokenReviews,
    /// Status writes received, and their fault.
    pub status_writes: crate::status_writes::StatusWrites,
}

fn parse_rv(s: &str) -> Result<u64, ApiError> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version {s:?}")))
}

fn spec_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    o
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

impl Store {
    pub fn new(kinds: Vec<KindInfo>) -> Store {
        let mut s = Store {
            rv: 1,
            compacted: 0,
            uids: 0,
            kinds: Vec::new(),
            watches: Vec::new(),
            frozen: Vec::new(),
            requests: Vec::new(),
            failures: Default::default(),
            token_reviews: Default::default(),
            status_writes: Default::default(),
        };
        for k in kinds {
            s.register_kind(k);
        }
        s
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn register_kind(&mut self, info: KindInfo) {
        if let Some(k) = self
            .kinds
            .iter_mut()
            .find(|k| k.info.group == info.group && k.info.kind == info.kind)
        {
            k.info = info;
            return;
        }
        self.kinds.push(Kind {
            info,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            floor: 0,
        });
    }

    pub fn kinds(&self) -> impl Iterator<Item = &KindInfo> {
        self.kinds.iter().map(|k| &k.info)
    }

    pub fn info(&self, k: usize) -> &KindInfo {
        &self.kinds[k].info
    }

    pub fn kind_by_plural(&self, group: &str, version: &str, plural: &str) -> Option<usize> {
        self.kinds.iter().position(|k| {
            k.info.group == group && k.info.version == version && k.info.plural == plural
        })
    }

    fn kind_by_api(&self, api_version: &str, kind: &str) -> Result<usize, String> {
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        self.kinds
            .iter()
            .position(|k| k.info.group == group && k.info.kind == kind)
            .ok_or_else(|| {
                format!("kind {kind} of {api_version} is not registered (ApiServer::register_kind)")
            })
    }

    fn key(&self, k: usize, namespace: Option<&str>, name: &str) -> Key {
        if self.kinds[k].info.namespaced {
            (namespace.unwrap_or("default").to_string(), name.to_string())
        } else {
            (String::new(), name.to_string())
        }
    }

    // ----- the test-facing API -----

    pub fn apply(&mut self, obj: Value) -> Result<Value, String> {
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .ok_or("object has no apiVersion")?;
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .ok_or("object has no kind")?;
        let k = self.kind_by_api(api_version, kind)?;
        let ns = meta_str(&obj, "namespace").map(str::to_string);
        let obj = self
            .normalize(k, obj, ns.as_deref())
            .map_err(|e| e.message)?;
        Ok(self.write(k, obj))
    }

    pub fn delete_by_kind(
        &mut self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<(), String> {
        let k = self.kind_by_api(api_version, kind)?;
        let key = self.key(k, namespace, name);
        self.remove(k, &key);
        Ok(())
    }

    pub fn get_by_kind(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, String> {
        let k = self.kind_by_api(api_version, kind)?;
        let key = self.key(k, namespace, name);
        Ok(self.kinds[k].objects.get(&key).cloned())
    }

    pub fn list_by_kind(&self, api_version: &str, kind: &str) -> Result<Vec<Value>, String> {
        let k = self.kind_by_api(api_version, kind)?;
        Ok(self.kinds[k].objects.values().cloned().collect())
    }

    pub fn open_watches(&mut self) -> usize {
        self.watches.retain(|w| !w.tx.is_closed());
        self.watches.len()
    }

    pub fn send_bookmarks(&mut self) -> usize {
        self.watches.retain(|w| !w.tx.is_closed());
        let rv = self.rv;
        let mut n = 0;
        for w in self.watches.iter_mut().filter(|w| w.bookmarks) {
            let info = &self.kinds[w.kind].info;
            w.send_bookmark(info, rv, false);
            n += 1;
        }
        n
    }

    /// Freezes every open watch: its connection stays open but is sent nothing more, as when the
    /// server vanished without closing it. Returns how many were frozen.
    pub fn freeze_watches(&mut self) -> usize {
        self.watches.retain(|w| !w.tx.is_closed());
        let n = self.watches.len();
        self.frozen.append(&mut self.watches);
        n
    }

    pub fn expire_history(&mut self) {
        self.compacted = self.rv;
        for k in &mut self.kinds {
            k.history.clear();
            k.floor = self.rv;
        }
        for w in self.watches.drain(..) {
            w.send_expired(w.last_rv, self.rv);
            // Dropping `w` drops its sender: the stream ends after the ERROR event.
        }
    }

    // ----- writes -----

    /// Sets apiVersion and kind from the registration, checks the name, sets or checks the
    /// namespace (`path_ns` is the namespace the object must be in, if any).
    fn normalize(
        &self,
        k: usize,
        mut obj: Value,
        path_ns: Option<&str>,
    ) -> Result<Value, ApiError> {
        let info = &self.kinds[k].info;
        if !obj.is_object() {
            return Err(ApiError::bad_request("the object is not a JSON object"));
        }
        if let Some(kind) = obj.get("kind").and_then(Value::as_str) {
            if kind != info.kind {
                return Err(ApiError::bad_request(format!(
                    "kind {kind} does not match the resource's kind {}",
                    info.kind
                )));
            }
        }
        obj["apiVersion"] = json!(info.api_version());
        obj["kind"] = json!(info.kind);
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        let name_ok = meta_str(&obj, "name").is_some_and(|n| !n.is_empty());
        if !name_ok {
            return Err(ApiError::new(
                422,
                "Invalid",
                "metadata.name: Required value: name is required",
            ));
        }
        let meta = obj["metadata"].as_object_mut().expect("metadata object");
        if info.namespaced {
            let body_ns = meta
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            let ns = match (body_ns, path_ns) {
                (Some(b), Some(p)) if b != p => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                (Some(b), _) => b.to_string(),
                (None, Some(p)) => p.to_string(),
                (None, None) => "default".to_string(),
            };
            meta.insert("namespace".into(), json!(ns));
        } else {
            meta.remove("namespace");
        }
        Ok(obj)
    }

    /// Stores a normalized object (create or replace), filling in the server-owned metadata, and
    /// emits the event. An update that changes nothing is a no-op, as on the real server.
    fn write(&mut self, k: usize, mut obj: Value) -> Value {
        let key = (
            meta_str(&obj, "namespace").unwrap_or("").to_string(),
            meta_str(&obj, "name").unwrap_or("").to_string(),
        );
        let old = self.kinds[k].objects.get(&key).cloned();
        let meta = obj["metadata"].as_object_mut().expect("metadata object");
        match &old {
            Some(old) => {
                for f in ["uid", "creationTimestamp", "resourceVersion"] {
                    match old["metadata"].get(f) {
                        Some(v) => meta.insert(f.into(), v.clone()),
                        None => meta.remove(f),
                    };
                }
                let gen = old["metadata"]["generation"].as_i64().unwrap_or(1);
                let changed = spec_part(old) != spec_part(&obj);
                obj["metadata"]["generation"] = json!(if changed { gen + 1 } else { gen });
                if &obj == old {
                    return obj;
                }
            }
            None => {
                self.uids += 1;
                meta.insert(
                    "uid".into(),
                    json!(format!("7e57a915-0000-4000-8000-{:012x}", self.uids)),
                );
                meta.insert("creationTimestamp".into(), json!(util::now_rfc3339()));
                meta.insert("generation".into(), json!(1));
            }
        }
        self.rv += 1;
        let rv = self.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.kinds[k].objects.insert(key, obj.clone());
        let typ = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.emit(k, typ, obj.clone(), old);
        obj
    }

    fn remove(&mut self, k: usize, key: &Key) -> Option<Value> {
        let mut obj = self.kinds[k].objects.remove(key)?;
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.emit(k, EventType::Deleted, obj.clone(), None);
        Some(obj)
    }

    fn emit(&mut self, k: usize, typ: EventType, obj: Value, old: Option<Value>) {
        let rv = self.rv;
        for w in self.watches.iter_mut().filter(|w| w.kind == k) {
            if let Some(t) = w.view(typ, &obj, old.as_ref()) {
                w.send_event(t.as_str(), &obj, rv);
            }
        }
        self.watches.retain(|w| !w.tx.is_closed());
        let kind = &mut self.kinds[k];
        kind.history.push_back(HistEvent { rv, typ, obj, old });
        while kind.history.len() > HISTORY_PER_KIND {
            if let Some(e) = kind.history.pop_front() {
                kind.floor = e.rv;
            }
        }
    }

    // ----- the HTTP-facing API -----

    pub fn get(&self, k: usize, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let key = self.key(k, ns, name);
        self.kinds[k]
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&self.kinds[k].info.plural, name))
    }

    pub fn list(
        &self,
        k: usize,
        ns: Option<&str>,
        q: &ListQuery,
        metadata_only: bool,
    ) -> Result<Value, ApiError> {
        let labels = LabelSelector::parse(q.label_selector.as_deref().unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(q.field_selector.as_deref().unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        let kind = &self.kinds[k];
        let (list_rv, start) = match q.continue_token.as_deref().filter(|s| !s.is_empty()) {
            Some(token) => {
                let (rv, key) = decode_continue(token)
                    .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
                if rv < self.compacted {
                    return Err(ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. \
                         You can start a new list without the continue parameter, or use the continue value \
                         from the response to get a consistent list result.",
                    ));
                }
                (rv, Bound::Excluded(key))
            }
            None => {
                if let Some(rv) = q.resource_version.as_deref().filter(|s| !s.is_empty()) {
                    let rv = parse_rv(rv)?;
                    let exact = q.resource_version_match.as_deref() == Some("Exact");
                    if exact && rv < self.compacted.max(kind.floor) {
                        return Err(ApiError::expired(format!(
                            "too old resource version: {rv} ({})",
                            self.compacted.max(kind.floor)
                        )));
                    }
                }
                (self.rv, Bound::Unbounded)
            }
        };
        let ns_ok = |o: &Value| ns.is_none() || meta_str(o, "namespace") == ns;
        let mut matching = kind
            .objects
            .range((start, Bound::Unbounded))
            .filter(|(_, o)| ns_ok(o) && labels.matches(o) && fields.matches(o));
        let limit = q.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let mut items = Vec::new();
        let mut last_key = None;
        for (key, o) in matching.by_ref().take(limit) {
            items.push(if metadata_only {
                util::partial_metadata(o)
            } else {
                o.clone()
            });
            last_key = Some(key.clone());
        }
        let remaining = matching.count();
        let mut metadata = json!({"resourceVersion": list_rv.to_string()});
        if remaining > 0 {
            let key = last_key.expect("a full page has a last key");
            metadata["continue"] = json!(encode_continue(list_rv, &key));
            metadata["remainingItemCount"] = json!(remaining);
        }
        let (api_version, list_kind) = if metadata_only {
            (
                "meta.k8s.io/v1".to_string(),
                "PartialObjectMetadataList".to_string(),
            )
        } else {
            (kind.info.api_version(), format!("{}List", kind.info.kind))
        };
        Ok(json!({
            "apiVersion": api_version,
            "kind": list_kind,
            "metadata": metadata,
            "items": items,
        }))
    }

    /// Opens a watch. The receiver yields event lines; it ends when the watch is expired.
    pub fn watch(
        &mut self,
        k: usize,
        ns: Option<&str>,
        q: &WatchQuery,
        metadata_only: bool,
    ) -> Result<UnboundedReceiver<Bytes>, ApiError> {
        let labels = LabelSelector::parse(q.label_selector.as_deref().unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(q.field_selector.as_deref().unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        let from = match q
            .resource_version
            .as_deref()
            .filter(|s| !s.is_empty() && *s != "0")
        {
            Some(s) => Some(parse_rv(s)?),
            None => None,
        };
        let (tx, rx) = unbounded_channel();
        let mut w = Watch {
            kind: k,
            namespace: ns.map(str::to_string),
            labels,
            fields,
            metadata_only,
            bookmarks: q.bookmarks,
            last_rv: from.unwrap_or(self.rv),
            tx,
        };
        let kind = &self.kinds[k];
        match from {
            Some(from) if !q.send_initial_events => {
                let oldest = self.compacted.max(kind.floor);
                if from < oldest {
                    w.send_expired(from, oldest);
                    return Ok(rx);
                }
                for e in kind.history.iter().filter(|e| e.rv > from) {
                    if let Some(t) = w.view(e.typ, &e.obj, e.old.as_ref()) {
                        w.send_event(t.as_str(), &e.obj, e.rv);
                    }
                }
            }
            _ => {
                // No resourceVersion (or "0"), or sendInitialEvents: the current state first.
                for o in kind.objects.values() {
                    if w.matches(o) {
                        let rv = meta_str(o, "resourceVersion")
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(self.rv);
                        w.send_event("ADDED", o, rv);
                    }
                }
                w.last_rv = self.rv;
                if q.send_initial_events {
                    w.send_bookmark(&kind.info, self.rv, true);
                }
            }
        }
        self.watches.push(w);
        Ok(rx)
    }

    pub fn create(&mut self, k: usize, ns: Option<&str>, body: Value) -> Result<Value, ApiError> {
        let mut body = body;
        if body.is_object() && meta_str(&body, "name").is_none_or(str::is_empty) {
            if let Some(prefix) = meta_str(&body, "generateName").map(str::to_string) {
                self.uids += 1;
                body["metadata"]["name"] = json!(format!("{prefix}{:05x}", self.uids));
            }
        }
        let obj = self.normalize(k, body, ns)?;
        let key = (
            meta_str(&obj, "namespace").unwrap_or("").to_string(),
            meta_str(&obj, "name").unwrap_or("").to_string(),
        );
        if self.kinds[k].objects.contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{}\" already exists", self.kinds[k].info.plural, key.1),
            ));
        }
        Ok(self.write(k, obj))
    }

    fn check_precondition(&self, k: usize, old: &Value, body: &Value) -> Result<(), ApiError> {
        if let Some(rv) = meta_str(body, "resourceVersion").filter(|s| !s.is_empty()) {
            if Some(rv) != meta_str(old, "resourceVersion") {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} \"{}\": the object has been modified; \
                         please apply your changes to the latest version and try again",
                        self.kinds[k].info.plural,
                        meta_str(old, "name").unwrap_or("")
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_name(&self, body: &Value, name: &str) -> Result<(), ApiError> {
        match meta_str(body, "name") {
            Some(n) if !n.is_empty() && n != name => Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            ))),
            _ => Ok(()),
        }
    }

    /// `PUT` of the object (`status == false`: the status is kept) or of its status subresource
    /// (`status == true`: only the status is taken).
    pub fn replace(
        &mut self,
        k: usize,
        ns: Option<&str>,
        name: &str,
        body: Value,
        status: bool,
    ) -> Result<Value, ApiError> {
        let old = self.get(k, ns, name)?;
        self.check_name(&body, name)?;
        self.check_precondition(k, &old, &body)?;
        let new = if status {
            with_status(old.clone(), body.get("status"))
        } else {
            let mut body = body;
            if body.is_object() {
                body["metadata"]["name"] = json!(name);
            }
            let body = self.normalize(k, body, meta_str(&old, "namespace"))?;
            with_status(body, old.get("status"))
        };
        Ok(self.write(k, new))
    }

    /// `PATCH` of the object (the status is kept; server-side apply creates a missing object) or
    /// of its status subresource (only the patched status is taken).
    pub fn patch(
        &mut self,
        k: usize,
        ns: Option<&str>,
        name: &str,
        typ: PatchType,
        patch: Value,
        status: bool,
    ) -> Result<Value, ApiError> {
        let old = match self.get(k, ns, name) {
            Ok(o) => o,
            Err(_) if typ == PatchType::Apply && !status => {
                self.check_name(&patch, name)?;
                let mut body = patch;
                if body.is_object() {
                    body["metadata"]["name"] = json!(name);
                }
                let obj = self.normalize(k, body, ns.or(Some("default")))?;
                return Ok(self.write(k, obj));
            }
            Err(e) => return Err(e),
        };
        let mut patched = old.clone();
        match typ {
            PatchType::Merge | PatchType::Apply => {
                if !patch.is_object() {
                    return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                }
                self.check_name(&patch, name)?;
                if typ == PatchType::Merge {
                    self.check_precondition(k, &old, &patch)?;
                }
                // The server owns these; a patch cannot move or retype the object.
                let mut patch = patch;
                if let Some(m) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
                    for f in [
                        "resourceVersion",
                        "uid",
                        "creationTimestamp",
                        "generation",
                        "namespace",
                        "name",
                    ] {
                        m.remove(f);
                    }
                }
                if let Some(m) = patch.as_object_mut() {
                    m.remove("apiVersion");
                    m.remove("kind");
                }
                util::merge_patch(&mut patched, &patch);
            }
            PatchType::Json => {
                util::json_patch(&mut patched, &patch)
                    .map_err(|e| ApiError::new(422, "Invalid", e))?;
                self.check_precondition(k, &old, &patched)?;
            }
        }
        let new = if status {
            with_status(old, patched.get("status"))
        } else {
            let mut patched = patched;
            let keep = |f: &str, p: &mut Value| p["metadata"][f] = old["metadata"][f].clone();
            keep("name", &mut patched);
            if old["metadata"].get("namespace").is_some() {
                keep("namespace", &mut patched);
            }
            let patched = self.normalize(k, patched, meta_str(&old, "namespace"))?;
            with_status(patched, old.get("status"))
        };
        Ok(self.write(k, new))
    }

    pub fn delete(&mut self, k: usize, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let key = self.key(k, ns, name);
        self.remove(k, &key)
            .ok_or_else(|| ApiError::not_found(&self.kinds[k].info.plural, name))
    }
}

fn with_status(mut obj: Value, status: Option<&Value>) -> Value {
    if let Some(m) = obj.as_object_mut() {
        match status {
            Some(s) if !s.is_null() => {
                m.insert("status".into(), s.clone());
            }
            _ => {
                m.remove("status");
            }
        }
    }
    obj
}

fn encode_continue(rv: u64, key: &Key) -> String {
    util::hex_encode(&json!([rv, key.0, key.1]).to_string())
}

fn decode_continue(token: &str) -> Option<(u64, Key)> {
    let v: Value = serde_json::from_str(&util::hex_decode(token)?).ok()?;
    Some((
        v.get(0)?.as_u64()?,
        (
            v.get(1)?.as_str()?.to_string(),
            v.get(2)?.as_str()?.to_string(),
        ),
    ))
}
