use super::*;
use crate::watch::testutil::TempDir;

fn header(v: &str) -> http::HeaderValue {
    http::HeaderValue::from_str(v).unwrap()
}

#[test]
fn checks_the_bearer_token() {
    let dir = TempDir::new("admin-token");
    std::fs::write(dir.join("token"), "  s3cret-token\n").unwrap();
    let token = AdminToken::load(dir.join("token")).unwrap();
    token.check(Some(&header("Bearer s3cret-token"))).unwrap();
    token.check(Some(&header("bearer s3cret-token"))).unwrap();
    let refused = |h: Option<&http::HeaderValue>| {
        let s = token.check(h).unwrap_err();
        assert_eq!(s.code(), tonic::Code::Unauthenticated);
        s.message().to_string()
    };
    assert!(refused(None).starts_with("missing bearer token"));
    assert_eq!(
        refused(Some(&header("Bearer s3cret"))),
        "wrong bearer token"
    );
    assert_eq!(
        refused(Some(&header("Bearer s3cret-token2"))),
        "wrong bearer token"
    );
    assert!(refused(Some(&header("Basic czNjcmV0"))).contains("not `Bearer TOKEN`"));

    // Rotation: the new token works, the old one no longer does; a bad file keeps the last good.
    std::fs::write(dir.join("token"), "next\n").unwrap();
    assert!(token.reload().unwrap());
    token.check(Some(&header("Bearer next"))).unwrap();
    assert_eq!(
        refused(Some(&header("Bearer s3cret-token"))),
        "wrong bearer token"
    );
    std::fs::write(dir.join("token"), "\n").unwrap();
    let e = token.reload().unwrap_err().to_string();
    assert!(e.contains("token") && e.contains("is empty"), "{e}");
    token.check(Some(&header("Bearer next"))).unwrap();
}

#[test]
fn token_file_errors_name_the_file() {
    let dir = TempDir::new("admin-token-errors");
    let e = AdminToken::load(dir.join("absent"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("absent") && e.contains("cannot read"), "{e}");
    std::fs::write(dir.join("spaced"), "two words").unwrap();
    let e = AdminToken::load(dir.join("spaced"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("spaced") && e.contains("one line"), "{e}");
}
