use super::*;

fn held(entries: &[(&str, u64)]) -> SharedHeld {
    entries.iter().map(|(n, h)| (n.to_string(), *h)).collect()
}

fn names(list: &[&str]) -> SharedNames {
    list.iter().map(|n| n.to_string()).collect()
}

/// A test's own names, so tests running at once do not share each other's collections.
fn unique(test: &str, i: usize) -> String {
    format!("{test}/{i}")
}

#[test]
fn equal_held_maps_are_one_collection() {
    let a = held(&[("eq/a", 1), ("eq/b", 2)]);
    let b = held(&[("eq/b", 2), ("eq/a", 1)]);
    assert!(a.is_shared_with(&b));
    let other = held(&[("eq/a", 1), ("eq/b", 3)]);
    assert!(!a.is_shared_with(&other));
    assert_ne!(a.digest(), other.digest());
}

/// The digest is the XOR of the entries' digests whichever way the map was reached.
#[test]
fn digest_follows_changes() {
    let mut m = held(&[("dg/a", 1), ("dg/b", 2)]);
    m.apply([("dg/b", Some(5)), ("dg/c", Some(7)), ("dg/a", None)]);
    let expected = entry_digest("dg/b", 5u64) ^ entry_digest("dg/c", 7u64);
    assert_eq!(m.digest(), expected);
    assert_eq!(
        m.iter().map(|(n, h)| (n.as_str(), *h)).collect::<Vec<_>>(),
        vec![("dg/b", 5), ("dg/c", 7)]
    );
    // Removing what is not there and setting what is already there change nothing.
    let before = m.clone();
    m.apply([("dg/zz", None), ("dg/b", Some(5))]);
    assert!(m.is_shared_with(&before));
    assert_eq!(m.digest(), before.digest());
}

/// A change never shows through another client's map (copy on write), and two clients making the
/// same change end up sharing the result again.
#[test]
fn copy_on_write_then_shared_again() {
    let all: Vec<(String, u64)> = (0..100).map(|i| (unique("cow", i), i as u64)).collect();
    let mut first: SharedHeld = all.iter().cloned().collect();
    let mut second: SharedHeld = all.iter().cloned().collect();
    let untouched: SharedHeld = all.iter().cloned().collect();
    assert!(first.is_shared_with(&second));

    first.apply([(unique("cow", 3), Some(1000)), (unique("cow", 4), None)]);
    assert!(!first.is_shared_with(&untouched));
    assert_eq!(untouched.get(&unique("cow", 3)), Some(&3));
    assert_eq!(untouched.get(&unique("cow", 4)), Some(&4));
    assert_eq!(second.get(&unique("cow", 3)), Some(&3));
    assert_eq!(first.get(&unique("cow", 3)), Some(&1000));
    assert_eq!(first.get(&unique("cow", 4)), None);

    second.apply([(unique("cow", 4), None), (unique("cow", 3), Some(1000))]);
    assert!(second.is_shared_with(&first));
    assert_eq!(*second, *first);

    // Back to the original content: the original collection, still alive through `untouched`.
    first.apply([(unique("cow", 3), Some(3)), (unique("cow", 4), Some(4))]);
    assert!(first.is_shared_with(&untouched));
}

/// For a name listed twice in one change the last value wins, as for sequential inserts.
#[test]
fn last_change_of_a_name_wins() {
    let mut m = held(&[("lw/a", 1)]);
    m.apply([("lw/a", None), ("lw/a", Some(9))]);
    assert_eq!(m.get("lw/a"), Some(&9));
    assert_eq!(m.digest(), entry_digest("lw/a", 9u64));
}

/// Collections nobody holds any more leave the intern table (it keeps only `Weak`s, swept).
#[test]
fn dropped_collections_are_swept() {
    for round in 0..5 {
        let maps: Vec<SharedHeld> = (0..200)
            .map(|i| held(&[(&unique(&format!("sw{round}"), i), 1)]))
            .collect();
        drop(maps);
    }
    // Other tests' live collections may be there too, but not 1,000 dead ones.
    assert!(HELD.len() < 600, "{} entries", HELD.len());
}

#[test]
fn names_update_reports_what_is_new() {
    let mut a = names(&["nu/a", "nu/b"]);
    let b = names(&["nu/b", "nu/a"]);
    assert!(a.is_shared_with(&b));
    let added = a.update(
        &["nu/b".to_string(), "nu/c".to_string(), "nu/d".to_string()],
        &["nu/d".to_string(), "nu/a".to_string()],
    );
    assert_eq!(added, BTreeSet::from(["nu/c".to_string()]));
    assert_eq!(
        a.iter().map(String::as_str).collect::<Vec<_>>(),
        vec!["nu/b", "nu/c"]
    );
    // `b` is untouched, and a client reaching the same set shares it.
    assert_eq!(b.len(), 2);
    assert!(b.contains("nu/a"));
    assert!(names(&["nu/c", "nu/b"]).is_shared_with(&a));
    // No change: nothing new, same collection.
    let before = a.clone();
    assert!(a
        .update(&["nu/b".to_string()], &["nu/x".to_string()])
        .is_empty());
    assert!(a.is_shared_with(&before));
}
