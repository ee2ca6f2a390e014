//! `xds-server --check-policies PATH`: offline validation of policy files (e.g. in a CI pipeline), run as
//! the real binary.

use std::path::Path;
use std::process::Command;

fn check(path: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xds-server"))
        .arg("--check-policies")
        .arg(path)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run xds-server");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_shipped_examples_pass_and_are_listed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let (ok, stdout, stderr) = check(&dir);
    assert!(ok, "stdout: {stdout}\nstderr: {stderr}");
    let files = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "yaml")
        })
        .count();
    assert!(files >= 9, "{files} example files");
    assert!(
        stdout.contains("web/search-admin: service web/search port admin"),
        "{stdout}"
    );
    assert!(stdout.contains("valid policies"), "{stdout}");
}

#[test]
fn every_bad_file_is_reported_with_line_field_and_fix_and_the_exit_code_is_1() {
    let dir = tempfile_dir();
    std::fs::write(
        dir.join("a.yaml"),
        "kind: FailoverPolicy\nmetadata: {name: a, namespace: shop}\nspec:\n  healthcheck: {tcp: {}}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("b.yaml"),
        "kind: FailoverPolicy\nmetadata: {name: b, namespace: web}\nspec:\n  distribute:\n  - from: eu-west4\n    to: {\"eu-west4/b/*\": 100}\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = check(&dir);
    assert!(!ok, "stdout: {stdout}");
    let a = dir.join("a.yaml").display().to_string();
    let b = dir.join("b.yaml").display().to_string();
    assert!(
        stderr.contains(&format!("{a}:4:3: document 1: spec.healthcheck:"))
            && stderr.contains("did you mean `healthCheck`?"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{b}:5:"))
            && stderr.contains("spec.distribute[0].from")
            && stderr.contains("did you mean `eu-west4/*`?"),
        "{stderr}"
    );
    assert!(stderr.contains("2 problem(s) found"), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");

    // Valid files that claim the same scope conflict across files.
    std::fs::write(
        dir.join("a.yaml"),
        "kind: FailoverPolicy\nmetadata: {name: a, namespace: web}\nspec: {}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("b.yaml"),
        "kind: FailoverPolicy\nmetadata: {name: b, namespace: web}\nspec: {panicThreshold: 1}\n",
    )
    .unwrap();
    let (ok, _, stderr) = check(&dir);
    assert!(!ok);
    assert!(
        stderr.contains("same scope (namespace web) as policy web/a"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("check-policies-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
