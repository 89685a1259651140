//! Any environment: the settings parser answers Ok or a list of problems, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

fuzz_target!(|data: &[u8]| {
    // Lines of NAME=VALUE, raw bytes (non-UTF-8 included); names get the PLUGIN_ prefix half the time.
    let vars = data.split(|b| *b == b'\n').filter_map(|line| {
        let at = line.iter().position(|b| *b == b'=')?;
        let (name, value) = (&line[..at], &line[at + 1..]);
        let mut key = if name.first().is_some_and(|b| b % 2 == 0) { b"PLUGIN_".to_vec() } else { Vec::new() };
        key.extend_from_slice(name.get(1..).unwrap_or_default());
        Some((OsString::from_vec(key), OsString::from_vec(value.to_vec())))
    });
    let _ = ecr_step::settings::Settings::from_env(vars);
});
