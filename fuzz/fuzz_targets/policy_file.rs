//! Any bytes as a failover policy file: the parser may reject, never panic, and a rejection names the file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = xds_core::policy::parse::parse_policies("fuzz.yaml", &text) {
        assert!(e.to_string().starts_with("fuzz.yaml"), "{e}");
    }
});
