//! The policy and endpoints-file parsers on hostile input, in every CI run: arbitrary text, and the
//! shipped examples with random cuts, splices and byte flips (the half-written and hand-mangled files
//! users actually produce). Neither parser may panic, and every rejection names the file. The
//! coverage-guided fuzz targets in `fuzz/` go further (see its README).

use proptest::prelude::*;
use xds_core::config::endpoints::parse_endpoints;
use xds_core::policy::parse::parse_policies;

const POLICY_SAMPLES: [&str; 10] = [
    include_str!("../../../policies/checkout.yaml"),
    include_str!("../../../policies/default.yaml"),
    include_str!("../../../policies/mtls.yaml"),
    include_str!("../../../policies/payments-backup.yaml"),
    include_str!("../../../policies/distribute.yaml"),
    include_str!("../../../policies/health-check.yaml"),
    include_str!("../../../policies/pinned-network.yaml"),
    include_str!("../../../policies/all-or-nothing.yaml"),
    include_str!("../../../policies/per-port.yaml"),
    include_str!("../../../policies/fleet-failover.yaml"),
];
const ENDPOINTS_SAMPLE: &str = include_str!("../../../deploy/local/endpoints.yaml");

/// One mutation of a sample: cut it short, splice in a random piece, or replace a byte.
fn mangle(sample: &str, op: u8, at: usize, piece: &str) -> String {
    let mut bytes = sample.as_bytes().to_vec();
    let at = at % (bytes.len() + 1);
    match op % 3 {
        0 => bytes.truncate(at),
        1 => {
            let tail = bytes.split_off(at);
            bytes.extend_from_slice(piece.as_bytes());
            bytes.extend_from_slice(&tail);
        }
        _ => {
            if let Some(b) = bytes.get_mut(at) {
                *b = piece.bytes().next().unwrap_or(b':');
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn yamlish() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[-:{}\\[\\],&*!|>'\"%@` \\n\\ta-zA-Z0-9.]{0,80}",
        Just("\n- ".to_string()),
        Just(": &a [*a, *a]".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn policy_parser_never_panics_and_names_the_file(
        sample in 0usize..POLICY_SAMPLES.len(),
        op in any::<u8>(),
        at in any::<usize>(),
        piece in yamlish(),
    ) {
        let text = mangle(POLICY_SAMPLES[sample], op, at, &piece);
        if let Err(e) = parse_policies("mangled.yaml", &text) {
            prop_assert!(e.to_string().starts_with("mangled.yaml"), "{}", e);
        }
        if let Err(e) = parse_policies("raw.yaml", &piece) {
            prop_assert!(e.to_string().starts_with("raw.yaml"), "{}", e);
        }
    }

    #[test]
    fn endpoints_parser_never_panics_and_names_the_file(
        op in any::<u8>(),
        at in any::<usize>(),
        piece in yamlish(),
    ) {
        let text = mangle(ENDPOINTS_SAMPLE, op, at, &piece);
        if let Err(e) = parse_endpoints("mangled.yaml", &text) {
            prop_assert!(e.to_string().starts_with("mangled.yaml"), "{}", e);
        }
        if let Err(e) = parse_endpoints("raw.yaml", &piece) {
            prop_assert!(e.to_string().starts_with("raw.yaml"), "{}", e);
        }
    }
}
