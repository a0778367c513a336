//! A raw mail as it arrives in the support mailbox: parsed as the email channel reads it
//! (MIME, charsets, HTML-only bodies, quotes and signatures cut, loop headers), then its
//! subject threaded and answered as the channel would.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_email::{clean, parse, thread};

fuzz_target!(|data: &[u8]| {
    // Unguarded: `parse` catches a parser panic, which would hide it from the fuzzer.
    let mail = parse::read(data, "mail.test.local");
    assert!(!mail.message_id.is_empty(), "every mail gets a Message-ID");
    let _ = clean::strip_quotes_and_signature(&mail.text);
    let _ = thread::normalise_subject(&mail.subject);
    let _ = thread::reply_subject(&mail.subject);
    if let Some(from) = &mail.from {
        let key = thread::thread_key(from, &mail.subject);
        let _ = thread::parse_thread(&key);
    }
});
