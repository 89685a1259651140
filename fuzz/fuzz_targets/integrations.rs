//! Any integrations file: parsed to an entry or an error, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ecr_step::settings::integrations::parse(text, "ecr-prod");
    }
});
