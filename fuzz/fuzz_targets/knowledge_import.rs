//! A knowledge article: the first byte picks Markdown, HTML or text, the rest is the file; it
//! is read into sections and packed into passages as the knowledge base ingests it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_import::{Format, pack, read};

fuzz_target!(|data: &[u8]| {
    let Some((format, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let format = match format % 3 {
        0 => Format::Markdown,
        1 => Format::Html,
        _ => Format::Text,
    };
    let imported = read(text, format);
    for section in &imported.sections {
        // A small passage size, so that the splitting at words runs too.
        for passage in pack(&section.paragraphs, 40) {
            assert!(!passage.is_empty());
        }
    }
});
