use super::*;

#[test]
fn durations() {
    let ok = [
        ("500ms", Duration::from_millis(500)),
        ("2s", Duration::from_secs(2)),
        ("1.5s", Duration::from_millis(1500)),
        ("1m", Duration::from_secs(60)),
        ("1h", Duration::from_secs(3600)),
        ("1m30s", Duration::from_secs(90)),
        ("0.25ms", Duration::from_micros(250)),
        (".5s", Duration::from_millis(500)),
        ("10us", Duration::from_micros(10)),
        ("7ns", Duration::from_nanos(7)),
    ];
    for (text, expected) in ok {
        assert_eq!(parse_duration(text), Ok(expected), "{text}");
    }
    for (text, needle) in [
        ("", "empty"),
        ("-1s", "negative"),
        ("0s", "greater than zero"),
        ("0ms", "greater than zero"),
        ("2", "no unit"),
        ("1.5", "no unit"),
        ("abc", "not a duration"),
        ("2 s", "not a duration"),
        ("2sec", "not a duration"),
        ("1..2s", "not a duration"),
        ("s", "not a duration"),
        ("99999999999999999999999h", "not a duration"),
    ] {
        let err = parse_duration(text).unwrap_err();
        assert!(err.contains(needle), "{text}: {err}");
    }
}
