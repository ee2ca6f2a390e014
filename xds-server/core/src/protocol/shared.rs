//! Per-client protocol state that most clients have in common, kept once.
//!
//! Every client of a mesh subscribes to much the same names and holds much the same resources: with
//! each stream keeping its own `BTreeSet`/`BTreeMap` of them, a server's memory per client grew with
//! the mesh (hundreds of names per type). [`SharedNames`] and [`SharedHeld`] are those collections
//! behind an `Arc`, interned by content: a client whose set or map ends up equal to one another client
//! already has takes that one (an `Arc` clone) instead of building its own. They are immutable once
//! shared; a change builds (copy-on-write) a new collection only when no client has the result yet, so
//! when the same change reaches every client (the usual case: a new snapshot) the first client pays
//! O(size) and each other one O(changes).
//!
//! Content is recognised by an order-independent digest (XOR of a per-entry hash) and the entry
//! count, which a change updates in O(changes). A digest collision would give a client another
//! collection than its own; with 64-bit SipHash entries that does not happen by accident, and a client
//! that crafts its names to collide only confuses its own stream: nothing is ever written to a shared
//! collection, so no other client is affected.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::{Arc, LazyLock, Mutex, Weak};

/// One entry's share of a collection's digest. For held maps this is exactly the SotW version's
/// per-resource digest, so a held map's digest is its type version.
pub fn entry_digest(name: &str, value: impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    value.hash(&mut h);
    h.finish()
}

/// Content digest and entry count: what a collection is interned under.
type Key = (u64, usize);

/// The live collections by content. Holds only `Weak`s: a collection goes when its last client
/// drops it; dead entries are swept once they are as many as the live ones were at the last sweep.
struct Interner<T> {
    table: Mutex<InternTable<T>>,
}

struct InternTable<T> {
    live: HashMap<Key, Weak<T>>,
    sweep_at: usize,
}

const MIN_SWEEP: usize = 64;

impl<T> Interner<T> {
    fn new() -> Self {
        Self {
            table: Mutex::new(InternTable {
                live: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InternTable<T>> {
        // The table holds no invariant a panicking holder could break halfway.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: Key) -> Option<Arc<T>> {
        self.lock().live.get(&key).and_then(Weak::upgrade)
    }

    /// `value` as the shared collection for `key`: the one already there if another client has it.
    fn intern(&self, key: Key, value: Arc<T>) -> Arc<T> {
        let mut table = self.lock();
        if let Some(existing) = table.live.get(&key).and_then(Weak::upgrade) {
            return existing;
        }
        table.live.insert(key, Arc::downgrade(&value));
        if table.live.len() > table.sweep_at {
            table.live.retain(|_, w| w.strong_count() > 0);
            table.sweep_at = (table.live.len() * 2).max(MIN_SWEEP);
        }
        value
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().live.len()
    }
}

static HELD: LazyLock<Interner<BTreeMap<String, u64>>> = LazyLock::new(Interner::new);
static NAMES: LazyLock<Interner<BTreeSet<String>>> = LazyLock::new(Interner::new);

/// What a client holds of one type, name → content hash; shared with every client holding the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedHeld {
    map: Arc<BTreeMap<String, u64>>,
    /// XOR of [`entry_digest`] over the entries.
    digest: u64,
}

impl Default for SharedHeld {
    fn default() -> Self {
        Self::from_map(BTreeMap::new())
    }
}

impl Deref for SharedHeld {
    type Target = BTreeMap<String, u64>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl FromIterator<(String, u64)> for SharedHeld {
    fn from_iter<I: IntoIterator<Item = (String, u64)>>(entries: I) -> Self {
        Self::from_map(entries.into_iter().collect())
    }
}

impl SharedHeld {
    fn from_map(map: BTreeMap<String, u64>) -> Self {
        let digest = map
            .iter()
            .fold(0, |d, (name, hash)| d ^ entry_digest(name, hash));
        let key = (digest, map.len());
        Self {
            map: HELD.intern(key, Arc::new(map)),
            digest,
        }
    }

    /// The map with `digest` and `len` entries: another client's if one holds it, else `build()`'s
    /// (which must have that digest). Saves building a map most clients already share.
    pub fn of(digest: u64, len: usize, build: impl FnOnce() -> BTreeMap<String, u64>) -> Self {
        if let Some(map) = HELD.get((digest, len)) {
            return Self { map, digest };
        }
        let map = build();
        debug_assert_eq!(Self::from_map(map.clone()).digest, digest);
        Self {
            map: HELD.intern((digest, map.len()), Arc::new(map)),
            digest,
        }
    }

    /// XOR of the entries' [`entry_digest`]s (for SotW, the type version).
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// Sets each name's hash (`None`: drops the name); for a name listed twice the last change wins.
    /// O(changes) when another client already holds the result.
    pub fn apply<N: AsRef<str> + Ord>(
        &mut self,
        changes: impl IntoIterator<Item = (N, Option<u64>)>,
    ) {
        let changes: BTreeMap<N, Option<u64>> = changes.into_iter().collect();
        let mut digest = self.digest;
        let mut len = self.map.len();
        let mut effective = Vec::new();
        for (name, new) in changes {
            let old = self.map.get(name.as_ref()).copied();
            if old == new {
                continue;
            }
            if let Some(old) = old {
                digest ^= entry_digest(name.as_ref(), old);
                len -= 1;
            }
            if let Some(new) = new {
                digest ^= entry_digest(name.as_ref(), new);
                len += 1;
            }
            effective.push((name, new));
        }
        if effective.is_empty() {
            return;
        }
        self.digest = digest;
        if let Some(shared) = HELD.get((digest, len)) {
            self.map = shared;
            return;
        }
        let mut map = BTreeMap::clone(&self.map);
        for (name, new) in effective {
            match new {
                Some(h) => map.insert(name.as_ref().to_string(), h),
                None => map.remove(name.as_ref()),
            };
        }
        self.map = HELD.intern((digest, len), Arc::new(map));
    }

    pub fn insert(&mut self, name: &str, hash: u64) {
        self.apply([(name, Some(hash))]);
    }

    pub fn remove(&mut self, name: &str) {
        self.apply([(name, None)]);
    }

    /// The same collection as `other` (not merely equal): for tests and diagnostics.
    pub fn is_shared_with(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.map, &other.map)
    }
}

/// The names a client subscribes to for one type; shared with every client subscribed to the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedNames {
    set: Arc<BTreeSet<String>>,
    digest: u64,
}

impl Default for SharedNames {
    fn default() -> Self {
        Self::from_set(BTreeSet::new())
    }
}

impl Deref for SharedNames {
    type Target = BTreeSet<String>;
    fn deref(&self) -> &Self::Target {
        &self.set
    }
}

impl FromIterator<String> for SharedNames {
    fn from_iter<I: IntoIterator<Item = String>>(names: I) -> Self {
        Self::from_set(names.into_iter().collect())
    }
}

impl SharedNames {
    fn from_set(set: BTreeSet<String>) -> Self {
        let digest = set.iter().fold(0, |d, name| d ^ entry_digest(name, ()));
        let key = (digest, set.len());
        Self {
            set: NAMES.intern(key, Arc::new(set)),
            digest,
        }
    }

    /// Adds `added` and then drops `removed`; returns the names that were not there before and still
    /// are. Subscriptions change rarely, so a change rebuilds the set unless another client has the
    /// result.
    pub fn update<'a>(
        &mut self,
        added: impl IntoIterator<Item = &'a String>,
        removed: impl IntoIterator<Item = &'a String>,
    ) -> BTreeSet<String> {
        let mut new: BTreeSet<&String> = added
            .into_iter()
            .filter(|n| !self.set.contains(*n))
            .collect();
        let gone: BTreeSet<&String> = removed.into_iter().collect();
        for n in &gone {
            new.remove(n);
        }
        let gone: Vec<&String> = gone.into_iter().filter(|n| self.set.contains(*n)).collect();
        if new.is_empty() && gone.is_empty() {
            return BTreeSet::new();
        }
        let mut digest = self.digest;
        for n in new.iter().chain(&gone) {
            digest ^= entry_digest(n, ());
        }
        let len = self.set.len() + new.len() - gone.len();
        let added: BTreeSet<String> = new.into_iter().cloned().collect();
        self.digest = digest;
        if let Some(shared) = NAMES.get((digest, len)) {
            self.set = shared;
            return added;
        }
        let mut set = BTreeSet::clone(&self.set);
        set.extend(added.iter().cloned());
        for n in gone {
            set.remove(n);
        }
        self.set = NAMES.intern((digest, len), Arc::new(set));
        added
    }

    /// The same collection as `other` (not merely equal): for tests and diagnostics.
    pub fn is_shared_with(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.set, &other.set)
    }
}

#[cfg(test)]
mod tests;
