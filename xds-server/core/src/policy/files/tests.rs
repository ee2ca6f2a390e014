use super::*;
use crate::policy::parse::{parse_file, parse_policies};
use crate::policy::testing::{backing_up, doc, with_factor};

fn parsed(file: &str, ns: &str, name: &str) -> FileUpdate {
    FileUpdate::Parsed(parse_file(file, &with_factor(ns, name, 150)))
}

#[test]
fn a_policy_can_move_between_files_in_one_batch_in_either_order() {
    for (from, to) in [("a.yaml", "b.yaml"), ("b.yaml", "a.yaml")] {
        let mut state = PolicyFiles::new();
        assert!(state
            .update(vec![(from.into(), parsed(from, "shop", "p"))])
            .is_empty());
        // `to` now defines the scope, `from` defines another one; in sorted order.
        let mut batch = vec![
            (from.to_string(), parsed(from, "other", "q")),
            (to.to_string(), parsed(to, "shop", "p")),
        ];
        batch.sort_by(|a, b| a.0.cmp(&b.0));
        assert!(state.update(batch).is_empty(), "{from} → {to}");
        assert_eq!(state.merged().entries.len(), 2);
        assert!(state.blocked.is_empty());
    }
}

#[test]
fn a_file_closing_a_backup_cycle_keeps_its_last_good_policies() {
    let mut state = PolicyFiles::new();
    let p = |file: &str, text: String| {
        (
            file.to_string(),
            FileUpdate::Parsed(parse_file(file, &text)),
        )
    };
    assert!(state
        .update(vec![
            p("a.yaml", backing_up("a", "b")),
            p("b.yaml", doc("shop", "b", "  service: b\n")),
        ])
        .is_empty());
    let good = state.merged();
    let errors = state.update(vec![p("b.yaml", backing_up("b", "a"))]);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].file(), "b.yaml");
    assert!(errors[0].reason().contains("cycle"), "{}", errors[0]);
    assert_eq!(state.merged(), good, "the last good set stays in force");
    assert_eq!(state.rejected()[0].source, "file:b.yaml");
}

#[test]
fn a_conflicting_file_is_held_back_until_it_fits() {
    let mut state = PolicyFiles::new();
    let errors = state.update(vec![
        ("a.yaml".into(), parsed("a.yaml", "shop", "p")),
        ("b.yaml".into(), parsed("b.yaml", "shop", "q")),
    ]);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].file(), "b.yaml");
    let rejected = state.rejected();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].source, "file:b.yaml");
    assert_eq!(rejected[0].error, errors[0].to_string());
    assert!(
        errors[0]
            .reason()
            .contains("shop/p (a.yaml, document 1, line 4)"),
        "{}",
        errors[0]
    );
    assert_eq!(state.merged().entries.len(), 1);

    // An unrelated change: b.yaml still does not fit, and is not reported again.
    let errors = state.update(vec![("c.yaml".into(), parsed("c.yaml", "x", "r"))]);
    assert!(errors.is_empty());
    assert_eq!(state.merged().entries.len(), 2);

    // a.yaml goes away (directory mode): b.yaml takes over.
    let errors = state.update(vec![(
        "a.yaml".into(),
        FileUpdate::Deleted {
            drop_policies: true,
        },
    )]);
    assert!(errors.is_empty());
    assert!(state.rejected().is_empty(), "b.yaml is in force now");
    let set = state.merged();
    assert_eq!(set.entries.len(), 2);
    assert!(set.entries.iter().any(|e| matches!(
        &e.origin,
        PolicyOrigin::Named { name, .. } if name == "q"
    )));

    // An invalid new content keeps the last good policies.
    let errors = state.update(vec![(
        "c.yaml".into(),
        FileUpdate::Parsed(parse_file(
            "c.yaml",
            "kind: FailoverPolicy
",
        )),
    )]);
    assert_eq!(errors.len(), 1);
    assert_eq!(state.merged(), set);
    assert_eq!(
        state
            .rejected()
            .iter()
            .map(|r| r.source.as_str())
            .collect::<Vec<_>>(),
        ["file:c.yaml"]
    );
    // Fixed: no longer rejected.
    let errors = state.update(vec![("c.yaml".into(), parsed("c.yaml", "x", "r"))]);
    assert!(errors.is_empty());
    assert!(state.rejected().is_empty());
}

#[test]
fn seeding_from_a_published_set_groups_by_source() {
    let text = format!(
        "{}---\n{}",
        with_factor("a", "x", 101),
        with_factor("b", "y", 102)
    );
    let set = PolicySet {
        entries: parse_policies("one.yaml", &text).unwrap(),
    };
    let state = PolicyFiles::seeded(&set);
    assert_eq!(state.files.len(), 1);
    assert_eq!(state.merged(), set);
}
