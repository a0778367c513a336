//! A knowledge article: the first byte picks Markdown, HTML or text, the rest is the file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((format, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    switchboard::fuzzing::knowledge(*format, text);
});
