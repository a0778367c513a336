//! A configuration file (TOML) as `Settings::load` reads it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    switchboard::fuzzing::config(text);
});
